//! `jobs [show | retry | purge]`: the job queue, and every mail as the job that sends it.

use std::io::Write;
use std::process::ExitCode;

use super::{CliError, JobsCommand};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::service;

/// Lists jobs, shows one, retries a dead one or purges finished ones.
pub(super) async fn run(
    settings: Settings,
    clock: SharedClock,
    command: Option<JobsCommand>,
    status: Option<String>,
    limit: u32,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let store = service::open_existing_store(&settings).await?;
    let listing = JobListing {
        status,
        limit,
        json,
        mail_attempts: settings.mail.retry.max_attempts,
    };
    let code = jobs_command(&store, command, listing, clock.now(), out).await?;
    store.close().await;
    Ok(code)
}

/// What `jobs` was asked to list, and how many attempts a mail has.
struct JobListing {
    status: Option<String>,
    limit: u32,
    json: bool,
    mail_attempts: u32,
}

async fn jobs_command(
    store: &crate::store::Store,
    command: Option<JobsCommand>,
    listing: JobListing,
    now: chrono::DateTime<chrono::Utc>,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let JobListing {
        status,
        limit,
        json,
        mail_attempts,
    } = listing;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    match command {
        None => {
            let rows = store.jobs(status.as_deref(), limit, mail_attempts).await?;
            if json {
                super::print_json(out, &rows)?;
            } else {
                // Mail waits while the relay is down: say so before the jobs it holds back.
                let relay = service::relay_status(store).await?;
                for line in relay.lines(now) {
                    writeln!(out, "{line}")?;
                }
                writeln!(
                    out,
                    "{:<26}  {:<34}  {:<8}  {:>8}  {:<20}  KEY",
                    "ID", "QUEUE", "STATUS", "ATTEMPTS", "RUN AT"
                )?;
                for j in rows {
                    writeln!(
                        out,
                        "{:<26}  {:<34}  {:<8}  {:>4}/{:<3}  {:<20}  {}",
                        j.id,
                        j.queue,
                        j.status,
                        j.attempts,
                        j.max_attempts,
                        time(j.run_at),
                        j.key.unwrap_or_default()
                    )?;
                }
            }
        }
        Some(JobsCommand::Show { id, json }) => {
            let job = match store.job(&id, mail_attempts).await? {
                Some(job) => job,
                // A bare number is most likely mail #N, whose job is `send:N`.
                None => match id.trim().parse::<u64>() {
                    Ok(n) => store
                        .job(&format!("send:{n}"), mail_attempts)
                        .await?
                        .ok_or_else(|| {
                            CliError::Input(format!(
                                "no job {id:?} and no mail #{n} (a mail's job is send:ID: try                                  `jobs show send:{n}` with the id `notifications` lists)"
                            ))
                        })?,
                    Err(_) => return Err(CliError::Input(format!("no job {id:?}"))),
                },
            };
            let mail = match job.args["outbox_id"].as_i64() {
                Some(outbox) => Some((
                    store.outbox_by_id(outbox).await?,
                    store.attempts(outbox).await?,
                )),
                None => None,
            };
            if json {
                let (row, attempts) = mail.unwrap_or_default();
                super::print_json(
                    out,
                    &serde_json::json!({"job": job, "mail": row, "attempts": attempts}),
                )?;
            } else {
                writeln!(
                    out,
                    "job        {} ({})",
                    job.id,
                    job.key.as_deref().unwrap_or("-")
                )?;
                writeln!(out, "queue      {}", job.queue)?;
                writeln!(
                    out,
                    "status     {} (attempts {}/{})",
                    job.status, job.attempts, job.max_attempts
                )?;
                writeln!(out, "run at     {}", time(job.run_at))?;
                writeln!(out, "done at    {}", time(job.done_at))?;
                writeln!(out, "args       {}", job.args)?;
                if let Some(result) = &job.last_result {
                    writeln!(out, "result     {result}")?;
                }
                if let Some((row, attempts)) = mail {
                    if let Some(row) = row {
                        writeln!(
                            out,
                            "mail       #{} {} ({}), {} attempts{}",
                            row.id,
                            row.key,
                            row.state.as_str(),
                            row.attempts,
                            row.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                        )?;
                    }
                    for a in attempts {
                        writeln!(
                            out,
                            "  attempt {}  {}  {:<9} {}  {}",
                            a.attempt,
                            a.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                            a.outcome,
                            a.smtp_code
                                .map(|c| c.to_string())
                                .unwrap_or_else(|| "-".into()),
                            a.detail.unwrap_or_default()
                        )?;
                    }
                }
            }
        }
        Some(JobsCommand::Retry { id }) => match store.retry_job(&id, now).await? {
            Some(key) => writeln!(out, "job {id} back to pending as {key}")?,
            None => {
                return Err(CliError::Input(format!(
                    "job {id:?} is not dead (only dead jobs can be retried; see `jobs show {id}`)"
                )));
            }
        },
        Some(JobsCommand::Purge { older_than }) => {
            let before =
                now - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::zero());
            let n = store.purge_done_jobs(before).await?;
            writeln!(
                out,
                "deleted {n} done jobs finished before {}",
                time(Some(before))
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
