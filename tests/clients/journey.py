"""A short journey with Customer.io's own Data Pipelines Python library
(customerio-cdp-analytics, unmodified), pointed at `profiledb serve`. Run by
tests/server_clients.rs:  python3 journey.py BASE_URL WRITE_KEY
Exits non-zero when the client reports an error."""
import sys

from customerio.analytics import Client

base, write_key = sys.argv[1], sys.argv[2]
errors = []
client = Client(
    write_key,
    host=base,
    sync_mode=True,
    gzip=True,
    max_retries=0,
    on_error=lambda e, batch: errors.append(repr(e)),
)
client.identify("py-1", {"email": "py@example.com", "plan": "pro", "createdAt": "2026-04-01T12:00:00.000Z"})
client.track("py-1", "Order Completed", {"revenue": 12.5, "products": [{"sku": "X"}]})
client.page("py-1", "Docs", "Home", {"url": "https://example.com/docs"})
client.screen("py-1", "App", "Settings")
client.group("py-1", "initech", {"name": "Initech", "object_type_id": "1", "relationshipAttributes": {"role": "owner"}})
# Anonymous activity, then the visitor identifies with that anonymous id.
client.track(anonymous_id="anon-py2", event="Product Viewed", properties={"sku": "Z"})
client.identify("py-2", {"email": "py2@example.com"}, anonymous_id="anon-py2")
client.track("py-1", "Device Created or Updated", context={"device": {"token": "tok-py1", "type": "ios"}})
client.identify("py-3", {"plan": "free"})
client.alias("py-3", "py-1")
client.track("py-4", "Signed Up")
client.identify("py-4", {"plan": "x"})
client.track("py-4", "User Suppressed")
client.flush()
if errors:
    print("client errors: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print("ok")
