//! Whether the SMTP relay answers as configured, without sending anything: connect, EHLO,
//! STARTTLS or implicit TLS as set, AUTH when credentials are set, then QUIT. One connection
//! of its own (the pooled transport would keep it open and never say QUIT).

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;

use crate::config::{SmtpSettings, SmtpTls};

/// The steps that passed (`connect, EHLO, STARTTLS, AUTH, QUIT`), or the step that failed and
/// why. Neither names a credential.
pub async fn probe_relay(s: &SmtpSettings) -> Result<String, String> {
    crate::install_tls_provider();
    match tokio::time::timeout(s.timeout, steps(s)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {} (mail.smtp.timeout)",
            humantime::format_duration(s.timeout)
        )),
    }
}

async fn steps(s: &SmtpSettings) -> Result<String, String> {
    let hello = ClientId::default();
    let tls = || {
        TlsParameters::new(s.host.clone()).map_err(|e| format!("TLS set-up for {}: {e}", s.host))
    };
    let mut done = vec!["connect", "EHLO"];
    let implicit = match s.tls {
        SmtpTls::Tls => Some(tls()?),
        _ => None,
    };
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        (s.host.as_str(), s.port),
        Some(s.timeout),
        &hello,
        implicit,
        None,
    )
    .await
    .map_err(|e| format!("connect and EHLO failed: {e}"))?;
    match s.tls {
        SmtpTls::Tls => done.insert(1, "TLS"),
        SmtpTls::Starttls => {
            conn.starttls(tls()?, &hello)
                .await
                .map_err(|e| format!("STARTTLS failed: {e}"))?;
            done.push("STARTTLS");
        }
        SmtpTls::None => {}
    }
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
        if let Err(e) = conn
            .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
            .await
        {
            conn.abort().await;
            return Err(format!("AUTH as {user} failed: {e}"));
        }
        done.push("AUTH");
    }
    conn.quit().await.map_err(|e| format!("QUIT failed: {e}"))?;
    done.push("QUIT");
    Ok(done.join(", "))
}
