"""The test harness: real `clarion serve` processes, real services, real sockets.

- `harness.util`: `user_id`, `free_port`, `send` (publish, expect 201), `eventually` and
  `eventually_async` (poll a predicate until it holds, bounded).
- `harness.services`: the external services' URLs, `require_service`, `postgres_database`,
  `node_database` (what the shared fixtures run on), `PrivateService` (our own redis/nats).
- `harness.server`: `Server` (one node as a child process; tokens, publish, CLI) and `Live`
  (an authenticated WebSocket client).
- `harness.cluster`: `start_nodes`/`stop_nodes`, `Tab`, `Traffic`, `publish_until_killed`,
  `assert_exactly_once_in_order`.

`make test` runs modules side by side in pytest-xdist workers, so nothing here is fixed or
global: ports are free ones, directories come from `tmp_path`, and every database, broker
namespace, queue and stream on the machine's services gets a fresh random name per test (module).
The Hypothesis example database (.hypothesis/) is shared: it writes by atomic rename, keyed by test.

Imports go one way: util <- services <- server <- cluster. `tests/conftest.py` holds only the
fixtures over it (`server`, `fresh_server`, `pg_url`).
"""
