// A short journey with Customer.io's own Node client (customerio-node, unmodified),
// pointed at `profiledb serve`. Run by tests/server_clients.rs:
//   node journey.js BASE_URL SITE_ID API_KEY APP_KEY WRITE_KEY SEGMENT_ID
// Prints one JSON line: what the App API answered for the people it wrote.
'use strict';
const { TrackClient, APIClient, PipelinesClient } = require('customerio-node');

async function main() {
  const [base, siteId, apiKey, appKey, writeKey, segment] = process.argv.slice(2);
  const opts = { retry: { maxRetries: 0 } };
  const track = new TrackClient(siteId, apiKey, { url: `${base}/api/v1`, ...opts });
  const api = new APIClient(appKey, { url: `${base}/v1`, ...opts });
  const pipes = new PipelinesClient(writeKey, { url: `${base}/v1`, ...opts });

  await track.identify('n-1', { email: 'node@example.com', plan: 'pro', created_at: 1767225600 });
  await track.track('n-1', { name: 'purchase', data: { amount: 42 }, id: 'evt-n1' });
  await track.trackPageView('n-1', '/pricing');
  await track.track('n-1', { name: 'Settings', type: 'screen' });
  // Anonymous activity, then the visitor identifies with that anonymous id.
  await track.trackAnonymous('anon-n2', { name: 'viewed_product', data: { sku: 'Y' } });
  await track.identify('n-2', { email: 'n2@example.com', anonymous_id: 'anon-n2' });
  await track.addDevice('n-1', 'apns-n1', 'ios', { app_version: '2.0', last_used: 1767225700 });
  await track.addDevice('n-1', 'fcm-n1', 'android');
  await track.deleteDevice('n-1', 'fcm-n1');
  // A relationship, through Track v2.
  await track.entity({
    type: 'person', action: 'identify', identifiers: { id: 'n-1' },
    attributes: { team: 'core' },
    cio_relationships: [{ identifiers: { object_type_id: '1', object_id: 'acme' }, relationship_attributes: { role: 'admin' } }],
  });
  await track.batch([
    { type: 'object', action: 'identify', identifiers: { object_type_id: '1', object_id: 'acme' }, attributes: { name: 'Acme' } },
    { type: 'person', action: 'event', identifiers: { id: 'n-1' }, name: 'signed_contract' },
  ]);
  await track.identify('n-3', { plan: 'free' });
  await track.mergeCustomers('id', 'n-1', 'id', 'n-3');
  await track.addCustomersToSegment(Number(segment), ['n-1', 'n-2']);
  await track.removeCustomersFromSegment(Number(segment), ['n-2']);
  await track.submitForm('newsletter', { email: 'form@example.com', first_name: 'Forma' });
  await track.identify('n-4', { plan: 'gone' });
  await track.suppress('n-4');

  // Pipelines through the Node client.
  await pipes.identify({ userId: 'np-1', traits: { email: 'np@example.com' } });
  await pipes.track({ userId: 'np-1', event: 'Order Completed', properties: { revenue: 9.5 } });
  await pipes.group({ userId: 'np-1', groupId: 'globex', traits: { name: 'Globex', object_type_id: '1' } });

  const out = {
    n1: await api.getAttributes('n-1', 'id'),
    n2: await api.getAttributes('n2@example.com', 'email'),
    byEmail: await api.getCustomersByEmail('node@example.com'),
    np1: await api.getAttributes('np-1'),
  };
  let missing = null;
  try {
    await api.getAttributes('n-4');
  } catch (e) {
    missing = e.statusCode;
  }
  out.n4Status = missing;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`journey failed: ${e && e.stack ? e.stack : e} ${e && e.response ? JSON.stringify(e.response) : ''}\n`);
  process.exit(1);
});
