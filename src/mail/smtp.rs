//! SMTP sessions to the relay: lettre's connection, kept in a pool of our own so that a mail
//! goes in two steps. [`SmtpPool::begin`] opens the mail (MAIL, RCPT, DATA); the message and
//! its final dot ([`Conversation::finish`]) follow when the caller says. Until that dot the
//! server has taken nothing, so the caller need count a mail as one a crash could send twice
//! only from then on (lettre's own pool sends the whole conversation in one call, and checks a
//! pooled connection with a NOOP first: here a connection the relay dropped while idle fails
//! at MAIL instead, where trying again on a fresh one is safe).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use secrecy::ExposeSecret;

use crate::config::{SmtpSettings, SmtpTls};

/// Why a session could not be opened, by step, naming no credential.
#[derive(Debug)]
pub struct OpenError {
    pub step: &'static str,
    pub error: SmtpError,
}

/// A connection to the relay as configured: connected (implicit TLS if set), EHLO, STARTTLS
/// if set, AUTH when credentials are set. `steps` learns each step passed.
pub async fn open(
    s: &SmtpSettings,
    steps: &mut Vec<&'static str>,
) -> Result<AsyncSmtpConnection, OpenError> {
    crate::install_tls_provider();
    let hello = ClientId::default();
    let fail = |step| move |error| OpenError { step, error };
    let tls = || TlsParameters::new(s.host.clone()).map_err(fail("TLS set-up"));
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
    .map_err(fail("connect and EHLO"))?;
    steps.push("connect");
    if s.tls == SmtpTls::Tls {
        steps.push("TLS");
    }
    steps.push("EHLO");
    if s.tls == SmtpTls::Starttls {
        conn.starttls(tls()?, &hello)
            .await
            .map_err(fail("STARTTLS"))?;
        steps.push("STARTTLS");
    }
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
        if let Err(error) = conn.auth(DEFAULT_MECHANISMS, &credentials).await {
            conn.abort().await;
            return Err(OpenError {
                step: "AUTH",
                error,
            });
        }
        steps.push("AUTH");
    }
    Ok(conn)
}

/// Open connections to the relay, kept for the next mail: at most `mail.smtp.pool_max_size`
/// idle, each closed (QUIT) once idle for `mail.smtp.pool_idle_timeout`.
pub struct SmtpPool {
    settings: SmtpSettings,
    idle: Arc<Mutex<Vec<Idle>>>,
    /// Started with the first connection kept, on the runtime that sends.
    reaper: std::sync::OnceLock<()>,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// A mail opened on a connection (MAIL, RCPT and DATA accepted): the server has taken nothing
/// until [`Conversation::finish`] sends the message and its final dot.
pub struct Conversation<'a> {
    pool: &'a SmtpPool,
    conn: AsyncSmtpConnection,
}

impl SmtpPool {
    pub fn new(settings: SmtpSettings) -> Self {
        Self {
            settings,
            idle: Arc::default(),
            reaper: std::sync::OnceLock::new(),
        }
    }

    /// Opens a mail to `envelope` whose message is `body`, on an idle connection or a new one.
    /// A connection the relay closed while idle fails before the server could take anything,
    /// so the mail is opened again on a new one.
    pub async fn begin(
        &self,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<Conversation<'_>, SmtpError> {
        let (mut conn, mut kept) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.open().await?, false),
        };
        loop {
            match open_mail(&mut conn, envelope, body).await {
                Ok(()) => return Ok(Conversation { pool: self, conn }),
                // No reply at all on a kept connection: the relay closed it while it was idle.
                Err(e) if kept && e.status().is_none() => {
                    conn.abort().await;
                    (conn, kept) = (self.open().await?, false);
                }
                Err(e) => {
                    conn.abort().await;
                    return Err(e);
                }
            }
        }
    }

    /// Whether the relay answers a NOOP (on an idle connection, or else a new one).
    pub async fn check(&self) -> Result<(), SmtpError> {
        if let Some(mut conn) = self.take_idle() {
            if conn.test_connected().await {
                self.put_back(conn);
                return Ok(());
            }
            conn.abort().await;
        }
        let mut conn = self.open().await?;
        conn.command(lettre::transport::smtp::commands::Noop)
            .await?;
        self.put_back(conn);
        Ok(())
    }

    /// Says QUIT on every idle connection, as the daemon stops.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        futures::future::join_all(idle.into_iter().map(|mut i| async move {
            i.conn.abort().await;
        }))
        .await;
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        open(&self.settings, &mut Vec::new())
            .await
            .map_err(|e| e.error)
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.pop().map(|i| i.conn)
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        let surplus = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.settings.pool_max_size as usize {
                idle.push(Idle {
                    conn,
                    since: Instant::now(),
                });
                None
            } else {
                Some(conn)
            }
        };
        match surplus {
            Some(mut conn) => {
                tokio::spawn(async move { conn.abort().await });
            }
            None => {
                self.reaper.get_or_init(|| {
                    let (idle, every) =
                        (Arc::downgrade(&self.idle), self.settings.pool_idle_timeout);
                    tokio::spawn(reap(idle, every));
                });
            }
        }
    }
}

/// Closes connections idle for longer than `limit`, until the pool is dropped.
async fn reap(idle: Weak<Mutex<Vec<Idle>>>, limit: Duration) {
    let every = (limit / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(idle) = idle.upgrade() else { return };
        let expired: Vec<Idle> = {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            let (old, fresh) = idle.drain(..).partition(|i| i.since.elapsed() >= limit);
            *idle = fresh;
            old
        };
        for mut i in expired {
            i.conn.abort().await;
        }
    }
}

/// MAIL, RCPT for each recipient, DATA; with SMTPUTF8 where an address needs it and 8BITMIME
/// where the body does and the server offers it (lettre encodes bodies as 7-bit).
async fn open_mail(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    body: &[u8],
) -> Result<(), SmtpError> {
    let mut options = Vec::new();
    let mut addresses = envelope.from().into_iter().chain(envelope.to());
    if addresses.any(|a| !AsRef::<str>::as_ref(a).is_ascii()) {
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
    }
    conn.command(Data).await?;
    Ok(())
}

impl Conversation<'_> {
    /// Sends the message and its final dot: `Ok` once the server has taken it. The
    /// connection goes back to the pool, or is closed after a failure.
    pub async fn finish(mut self, body: &[u8]) -> Result<(), SmtpError> {
        match self.conn.message(body).await {
            Ok(_) => {
                self.pool.put_back(self.conn);
                Ok(())
            }
            Err(e) => {
                self.conn.abort().await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// What a scripted relay saw.
    #[derive(Default)]
    struct Seen {
        sessions: AtomicUsize,
        data: AtomicUsize,
        taken: AtomicUsize,
        quits: AtomicUsize,
    }

    /// A relay on a port of its own that takes every mail; with `drop_after_mail` it closes
    /// the connection right after taking one, as a relay that drops idle connections does.
    async fn relay(drop_after_mail: bool) -> (u16, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    s.sessions.fetch_add(1, Ordering::SeqCst);
                    let (r, mut w) = socket.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 relay.test\r\n").await?;
                    let mut in_data = false;
                    while let Some(line) = lines.next_line().await? {
                        let reply: &[u8] = if in_data {
                            if line != "." {
                                continue;
                            }
                            in_data = false;
                            s.taken.fetch_add(1, Ordering::SeqCst);
                            b"250 taken\r\n"
                        } else {
                            match &line.to_ascii_uppercase()[..4.min(line.len())] {
                                "DATA" => {
                                    in_data = true;
                                    s.data.fetch_add(1, Ordering::SeqCst);
                                    b"354 go on\r\n"
                                }
                                "QUIT" => {
                                    s.quits.fetch_add(1, Ordering::SeqCst);
                                    w.write_all(b"221 bye\r\n").await?;
                                    return Ok(());
                                }
                                _ => b"250 ok\r\n",
                            }
                        };
                        w.write_all(reply).await?;
                        if drop_after_mail && reply.starts_with(b"250 taken") {
                            return Ok(());
                        }
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
        });
        (port, seen)
    }

    fn pool(port: u16, idle_timeout: Duration) -> SmtpPool {
        SmtpPool::new(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            pool_max_size: 4,
            pool_idle_timeout: idle_timeout,
        })
    }

    fn mail() -> (Envelope, Vec<u8>) {
        let envelope = Envelope::new(
            Some("from@renewal-worker.test".parse().unwrap()),
            vec!["to@acme.example".parse().unwrap()],
        )
        .unwrap();
        (envelope, b"Subject: hello\r\n\r\nbody\r\n".to_vec())
    }

    /// One mail, both steps.
    async fn send(pool: &SmtpPool) -> Result<(), SmtpError> {
        let (envelope, body) = mail();
        pool.begin(&envelope, &body).await?.finish(&body).await
    }

    #[tokio::test]
    async fn the_server_takes_nothing_before_the_final_dot() {
        let (port, seen) = relay(false).await;
        let pool = pool(port, Duration::from_secs(60));
        let (envelope, body) = mail();
        let conversation = pool.begin(&envelope, &body).await.expect("opened");
        assert_eq!(seen.data.load(Ordering::SeqCst), 1);
        assert_eq!(seen.taken.load(Ordering::SeqCst), 0);
        conversation.finish(&body).await.expect("taken");
        assert_eq!(seen.taken.load(Ordering::SeqCst), 1);
        // The connection serves the next mail.
        send(&pool).await.expect("sent");
        assert_eq!(seen.sessions.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_relay_dropped_while_idle_is_replaced_unnoticed() {
        let (port, seen) = relay(true).await;
        let pool = pool(port, Duration::from_secs(60));
        for n in 1..=3 {
            send(&pool)
                .await
                .unwrap_or_else(|e| panic!("mail {n}: {e}"));
            // The relay's close reaches the pooled connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen.taken.load(Ordering::SeqCst), 3);
        assert_eq!(seen.sessions.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_says_quit_after_the_idle_timeout() {
        let (port, seen) = relay(false).await;
        let pool = pool(port, Duration::from_millis(200));
        send(&pool).await.expect("sent");
        assert_eq!(seen.quits.load(Ordering::SeqCst), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.quits.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.quits.load(Ordering::SeqCst), 1);
        assert!(pool.take_idle().is_none());
    }

    #[tokio::test]
    async fn closing_the_pool_says_quit_on_each_idle_connection() {
        let (port, seen) = relay(false).await;
        let pool = pool(port, Duration::from_secs(60));
        let (a, b) = tokio::join!(send(&pool), send(&pool));
        a.and(b).expect("sent");
        assert_eq!(seen.sessions.load(Ordering::SeqCst), 2);
        pool.close().await;
        assert_eq!(seen.quits.load(Ordering::SeqCst), 2);
    }
}
