//! Whether the SMTP relay answers as configured, without sending anything: connect, EHLO,
//! STARTTLS or implicit TLS as set, AUTH when credentials are set, then QUIT. One connection
//! of its own (the pooled transport would keep it open and never say QUIT).

use crate::config::SmtpSettings;

/// The steps that passed (`connect, EHLO, STARTTLS, AUTH, QUIT`), or the step that failed and
/// why. Neither names a credential.
pub async fn probe_relay(s: &SmtpSettings) -> Result<String, String> {
    match tokio::time::timeout(s.timeout, steps(s)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {} (mail.smtp.timeout)",
            humantime::format_duration(s.timeout)
        )),
    }
}

async fn steps(s: &SmtpSettings) -> Result<String, String> {
    let mut done = Vec::new();
    let mut conn = super::smtp::open(s, &mut done)
        .await
        .map_err(|e| match e.step {
            "AUTH" => format!(
                "AUTH as {} failed: {}",
                s.username.as_deref().unwrap_or(""),
                e.error
            ),
            step => format!("{step} failed: {}", e.error),
        })?;
    conn.quit().await.map_err(|e| format!("QUIT failed: {e}"))?;
    done.push("QUIT");
    Ok(done.join(", "))
}
