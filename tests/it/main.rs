//! Integration tests: the real worker against a real SMTP server listening on a TCP port of
//! this process, and a fresh database of its own per test. Most tests run twice, as
//! `NAME::sqlite` (a file in a temp folder) and `NAME::postgres` (a new database on the
//! machine's PostgreSQL, `RENEWAL_WORKER_TEST_PG` or postgres://postgres@127.0.0.1:5432).

#[macro_use]
mod helpers;
// Shared with the benchmarks: the plans of the store's own statements, and synthetic books.
mod cli;
mod console;
mod console_lists;
mod crash;
mod delivery;
mod disable;
#[path = "../../benches/support/explain.rs"]
mod explain;
mod hostile;
mod http;
mod install;
#[path = "../../benches/support/mailbook.rs"]
mod mailbook;
mod mailtext;
mod outage;
mod provisioning;
mod relay;
mod renewal;
mod scale;
mod secrets;
mod source;
#[path = "../../benches/support/synthetic.rs"]
mod synthetic;
mod templates;
