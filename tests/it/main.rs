//! Integration tests: the real worker against a fresh SQLite database in a temp folder and a
//! real SMTP server listening on a TCP port of this process.

mod cli;
mod delivery;
mod disable;
mod helpers;
mod http;
mod renewal;
mod source;
mod templates;
