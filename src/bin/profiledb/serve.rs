//! `profiledb serve`: the database as an HTTP edge server (see `profiledb::server`).

use std::net::SocketAddr;

use clap::Args;
use profiledb::server::{shutdown_signal, Config, Keys, Server};
use profiledb::Durability;

use crate::context::{self, Context};
use crate::output::{CmdResult, Failure};

/// `serve`'s flags. A key flag wins over its environment variable.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Track API site id (Basic auth user) [env: PROFILEDB_SITE_ID]
    #[arg(long, value_name = "ID")]
    site_id: Option<String>,
    /// Track API key (Basic auth password) [env: PROFILEDB_API_KEY]
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Data Pipelines write key [env: PROFILEDB_WRITE_KEY]
    #[arg(long, value_name = "KEY")]
    write_key: Option<String>,
    /// App API key (Bearer token) [env: PROFILEDB_APP_KEY]
    #[arg(long, value_name = "KEY")]
    app_key: Option<String>,
    /// Reporting webhook signing key (checks X-CIO-Signature) [env: PROFILEDB_WEBHOOK_KEY]
    #[arg(long, value_name = "KEY")]
    webhook_key: Option<String>,
    /// Accept requests without any key (only on a loopback address).
    #[arg(long)]
    no_auth: bool,
    /// Write requests that may wait for the writer; more are answered 429.
    #[arg(long, value_name = "N", default_value_t = Config::default().queue_depth)]
    queue_depth: usize,
    /// Open connections at most; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_connections)]
    max_connections: usize,
}

/// The flag's value, else the environment variable's (empty counts as unset).
fn key(flag: Option<String>, env: &str) -> Option<String> {
    flag.or_else(|| std::env::var(env).ok())
        .filter(|k| !k.is_empty())
}

pub fn serve(ctx: &Context, args: ServeArgs) -> CmdResult {
    let config = Config {
        keys: Keys {
            site_id: key(args.site_id, "PROFILEDB_SITE_ID"),
            api_key: key(args.api_key, "PROFILEDB_API_KEY"),
            write_key: key(args.write_key, "PROFILEDB_WRITE_KEY"),
            app_key: key(args.app_key, "PROFILEDB_APP_KEY"),
            webhook_key: key(args.webhook_key, "PROFILEDB_WEBHOOK_KEY"),
        },
        no_auth: args.no_auth,
        queue_depth: args.queue_depth,
        max_connections: args.max_connections,
        ..Config::default()
    };
    // The server makes each group of writes durable itself (one flush per group).
    let db = ctx.open(Durability::Buffered)?;
    let server =
        Server::bind(db.clone(), args.listen, config).map_err(|e| Failure::new(e.to_string()))?;
    let addr = server
        .local_addr()
        .map_err(|e| Failure::new(format!("the listening socket failed: {e}")))?;
    eprintln!("listening on http://{addr}");
    server
        .run(shutdown_signal())
        .map_err(|e| Failure::new(e.to_string()))?;
    context::close(db)
}
