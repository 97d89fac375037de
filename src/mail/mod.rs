//! Mail transport: SMTP (pooled) or a folder of `.eml` files, chosen by config, and the
//! building of multipart messages. Failures are classified the way SMTP means them: a 5xx
//! reply is permanent, everything else (4xx, timeouts, refused connections) is transient.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use secrecy::ExposeSecret;

use crate::config::{MailSettings, SmtpTls, TransportKind};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail setting `{key}` = {value:?} is not usable: {reason}")]
    Setting {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// Why a send did not go through, in the terms retries care about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("transient failure{}: {detail}", code_suffix(*code))]
    Transient { code: Option<u16>, detail: String },
    #[error("permanent failure{}: {detail}", code_suffix(*code))]
    Permanent { code: Option<u16>, detail: String },
}

fn code_suffix(code: Option<u16>) -> String {
    code.map(|c| format!(" ({c})")).unwrap_or_default()
}

/// A rendered mail ready to go.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Full Message-ID including angle brackets.
    pub message_id: String,
}

#[derive(Clone)]
enum Inner {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

#[derive(Clone)]
pub struct Mailer {
    inner: Inner,
    /// Bound on one whole send: lettre's own timeout does not cover a server that accepts the
    /// connection and then says nothing.
    send_timeout: Duration,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    description: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.description)
            .finish()
    }
}

impl Mailer {
    pub fn from_settings(s: &MailSettings) -> Result<Self, MailError> {
        let from: Mailbox = s.from.parse().map_err(|e| MailError::Setting {
            key: "mail.from",
            value: s.from.clone(),
            reason: format!("{e}"),
        })?;
        let reply_to = s
            .reply_to
            .as_ref()
            .map(|r| {
                r.parse::<Mailbox>().map_err(|e| MailError::Setting {
                    key: "mail.reply_to",
                    value: r.clone(),
                    reason: format!("{e}"),
                })
            })
            .transpose()?;
        let (inner, description) = match s.transport {
            TransportKind::File => {
                std::fs::create_dir_all(&s.file_dir).map_err(|e| MailError::Setting {
                    key: "mail.file_dir",
                    value: s.file_dir.display().to_string(),
                    reason: e.to_string(),
                })?;
                (
                    Inner::File(AsyncFileTransport::new(&s.file_dir)),
                    format!("file:{}", s.file_dir.display()),
                )
            }
            TransportKind::Smtp => {
                let smtp = &s.smtp;
                let host_err = |e: lettre::transport::smtp::Error| MailError::Setting {
                    key: "mail.smtp.host",
                    value: smtp.host.clone(),
                    reason: e.to_string(),
                };
                let mut builder = match smtp.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                            .map_err(host_err)?
                    }
                    SmtpTls::Tls => {
                        AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(host_err)?
                    }
                }
                .port(smtp.port)
                .timeout(Some(smtp.timeout))
                .pool_config(
                    PoolConfig::new()
                        .max_size(smtp.pool_max_size)
                        .idle_timeout(smtp.pool_idle_timeout),
                );
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_owned(),
                    ));
                }
                let tls = match smtp.tls {
                    SmtpTls::None => "plain",
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::Tls => "tls",
                };
                (
                    Inner::Smtp(builder.build()),
                    format!("smtp://{}:{} ({tls})", smtp.host, smtp.port),
                )
            }
        };
        Ok(Self {
            inner,
            send_timeout: s.smtp.timeout,
            from,
            reply_to,
            description,
        })
    }

    /// Where mail goes, for logs and the start banner (no secrets).
    pub fn describe(&self) -> &str {
        &self.description
    }

    pub fn build_message(&self, mail: &OutgoingMail) -> Result<Message, MailError> {
        if mail.to.is_empty() {
            return Err(MailError::Build("no recipients".into()));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(&mail.subject))
            .message_id(Some(mail.message_id.clone()));
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        for to in &mail.to {
            builder = builder.to(Mailbox::new(None, to.clone()));
        }
        for cc in &mail.cc {
            builder = builder.cc(Mailbox::new(None, cc.clone()));
        }
        // Given, lettre would otherwise parse it back out of the headers just written.
        let envelope = Envelope::new(
            Some(self.from.email.clone()),
            mail.to.iter().chain(&mail.cc).cloned().collect(),
        )
        .map_err(|e| MailError::Build(e.to_string()))?;
        builder
            .envelope(envelope)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        lettre::message::SinglePart::builder()
                            .header(header::ContentType::TEXT_PLAIN)
                            .body(body(&mail.text)),
                    )
                    .singlepart(
                        lettre::message::SinglePart::builder()
                            .header(header::ContentType::TEXT_HTML)
                            .body(body(&mail.html)),
                    ),
            )
            .map_err(|e| MailError::Build(e.to_string()))
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match &self.inner {
            Inner::Smtp(t) => {
                let sent = match tokio::time::timeout(self.send_timeout, t.send(message)).await {
                    Ok(result) => result.map(|_| ()).map_err(classify_smtp),
                    Err(_) => Err(SendError::Transient {
                        code: None,
                        detail: format!(
                            "no complete answer from the SMTP server within {}",
                            humantime::format_duration(self.send_timeout)
                        ),
                    }),
                };
                // lettre hands the connection back to its pool in a task of its own: a send
                // that starts right after this one returns would often find the pool empty and
                // open a new connection, which the pool then closes as surplus (118-252
                // sessions per 10,000 mails, 16 at once, instead of 16). One yield lets that
                // task run first.
                tokio::task::yield_now().await;
                sent
            }
            Inner::File(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                // A full disk or a missing folder may well be fixed by the operator.
                SendError::Transient {
                    code: None,
                    detail: e.to_string(),
                }
            }),
        }
    }

    /// Whether the transport can be reached now (SMTP: a NOOP over a fresh connection).
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        match &self.inner {
            Inner::Smtp(t) => match tokio::time::timeout(timeout, t.test_connection()).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err("the SMTP server did not answer NOOP".into()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            },
            Inner::File(_) => Ok(()),
        }
    }
}

fn classify_smtp(e: lettre::transport::smtp::Error) -> SendError {
    let code = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
    let detail = e.to_string();
    if e.is_permanent() {
        SendError::Permanent { code, detail }
    } else {
        SendError::Transient { code, detail }
    }
}

/// A part's body with CRLF line ends, sent as it is (`7bit`) when RFC 2045 allows: ASCII
/// alone, no NUL, CR only before LF, no line longer than 998 octets. Otherwise lettre picks
/// quoted-printable or base64. lettre's own choice sends `7bit` only for lines under 76
/// octets, so it encoded every shipped template (their paragraphs are one line each): the
/// encoding was about a quarter of composing a mail, and the encoded body is larger.
fn body(s: &str) -> lettre::message::Body {
    let (s, seven_bit) = crlf(s);
    if seven_bit {
        lettre::message::Body::dangerous_pre_encoded(
            s.into_bytes(),
            header::ContentTransferEncoding::SevenBit,
        )
    } else {
        lettre::message::Body::new(s)
    }
}

/// Whether CRLF-ended text is `7bit` data in RFC 2045's terms (section 2.7), byte by byte:
/// the rule as written, which the tests hold `crlf`'s answer to.
#[cfg(test)]
fn is_seven_bit(s: &str) -> bool {
    const MAX_LINE: usize = 998;
    let b = s.as_bytes();
    let mut line_start = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            0 | 0x80.. => return false,
            b'\r' if b.get(i + 1) != Some(&b'\n') => return false,
            b'\n' => {
                if i == 0 || b[i - 1] != b'\r' || i - 1 - line_start > MAX_LINE {
                    return false;
                }
                line_start = i + 1;
            }
            _ => {}
        }
    }
    b.len() - line_start <= MAX_LINE
}

/// The body with SMTP's line ends (CRLF), made in one pass (lettre makes them by inserting
/// each `\r` in place, which moves the rest of the body once per line), and whether the result
/// is `7bit` data in RFC 2045's terms (section 2.7): ASCII, no NUL, no CR but before LF, no
/// line over 998 octets. Both come from the same walk over the lines: this runs for every
/// part of every mail.
fn crlf(s: &str) -> (String, bool) {
    const MAX_LINE: usize = 998;
    let mut out = String::with_capacity(s.len() + s.len() / 16);
    let mut seven_bit = true;
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        // No early exit, so that the loop vectorizes; a line's bytes are checked at once.
        let bad = line
            .bytes()
            .fold(false, |bad, b| bad | (b == 0) | (b == b'\r') | (b >= 0x80));
        seven_bit &= !bad && line.len() <= MAX_LINE;
        out.push_str(line);
    }
    (out, seven_bit)
}

/// Header values cannot span lines; a template that renders a newline into the subject must
/// not be able to inject headers.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_folded_to_one_line() {
        assert_eq!(one_line(" a\r\nBcc: x@y\n b "), "a Bcc: x@y b");
    }

    #[test]
    fn bodies_get_crlf_line_ends_once() {
        assert_eq!(crlf("a\nb\r\nc\n\nd").0, "a\r\nb\r\nc\r\n\r\nd");
        assert_eq!(crlf("\n").0, "\r\n");
        assert_eq!(crlf("no end").0, "no end");
    }

    #[test]
    fn bodies_go_as_seven_bit_only_where_rfc_2045_allows() {
        let long = "x".repeat(998);
        assert!(is_seven_bit(""));
        assert!(is_seven_bit(&format!("{long}\r\n{long}")));
        assert!(!is_seven_bit(&format!("{long}x\r\nshort")));
        assert!(!is_seven_bit(&format!("short\r\n{long}x")));
        assert!(!is_seven_bit("caf\u{e9}"));
        assert!(!is_seven_bit("a\0b"));
        assert!(!is_seven_bit("a\rb"));
        assert!(!is_seven_bit("a\nb"));
        assert!(!is_seven_bit("a\r"));
        use header::ContentTransferEncoding as Cte;
        assert_eq!(body(&"long line ".repeat(20)).encoding(), Cte::SevenBit);
        assert_eq!(body("M\u{fc}ller").encoding(), Cte::QuotedPrintable);
        assert_eq!(body(&format!("{long}x")).encoding(), Cte::QuotedPrintable);
        assert_eq!(body(&format!("{long}\n{long}")).encoding(), Cte::SevenBit);
        for bad in ["caf\u{e9}", "ok\n\n\u{7f}\u{80}"] {
            assert_ne!(body(bad).encoding(), Cte::SevenBit, "{bad:?}");
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The one-pass answer is the rule's on the text it made, whatever the text: line
        /// ends of either kind, lone CRs, NULs, non-ASCII, lines around 998 octets.
        #[test]
        fn crlf_says_seven_bit_exactly_when_the_rule_does(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("\n".to_owned()),
                    proptest::strategy::Just("\r\n".to_owned()),
                    proptest::strategy::Just("\r".to_owned()),
                    proptest::strategy::Just("\0".to_owned()),
                    proptest::strategy::Just("\u{e9}".to_owned()),
                    (990usize..1000).prop_map(|n| "y".repeat(n)),
                    "[ -~]{0,20}",
                ],
                0..8,
            )
        ) {
            let text = parts.concat();
            let (out, seven_bit) = crlf(&text);
            proptest::prop_assert_eq!(seven_bit, is_seven_bit(&out), "{:?}", text);
            proptest::prop_assert!(!out.replace("\r\n", "").contains('\n'));
        }
    }
}
