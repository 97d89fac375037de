//! Mail transport: SMTP (pooled) or a folder of `.eml` files, chosen by config, and the
//! building of multipart messages. Failures are classified the way SMTP means them: a fault of
//! the relay (no connection, TLS, a timeout, 421 "closing channel", a failed login, a "too many"
//! push-back) says nothing of the message; a 4xx reply about the message is transient; a 5xx
//! reply about it is permanent.

mod probe;
mod smtp;

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailSettings, SmtpTls, TransportKind};
use smtp::{Conversation, SmtpPool};

pub use probe::probe_relay;

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
    /// The relay did not take or refuse this message; it was down, unreachable, or asked to
    /// slow down (`throttled`). Any other message would have fared the same.
    #[error("relay unavailable{}: {detail}", code_suffix(*code))]
    Relay {
        code: Option<u16>,
        detail: String,
        throttled: bool,
    },
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
    Smtp(std::sync::Arc<SmtpPool>),
    File(AsyncFileTransport<Tokio1Executor>),
}

#[derive(Clone)]
pub struct Mailer {
    inner: Inner,
    /// Bound on one whole send (its two steps together): lettre's own timeout does not cover
    /// a server that accepts the connection and then says nothing.
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
        let (from, reply_to) = (s.from.clone(), s.reply_to.clone());
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
                if smtp.tls != SmtpTls::None {
                    // Refused here, not at the first send: a host TLS cannot name.
                    let refused = |reason: String| MailError::Setting {
                        key: "mail.smtp.host",
                        value: smtp.host.clone(),
                        reason,
                    };
                    rustls::pki_types::ServerName::try_from(smtp.host.as_str())
                        .map_err(|e| refused(e.to_string()))?;
                    crate::install_tls_provider();
                    lettre::transport::smtp::client::TlsParameters::new(smtp.host.clone())
                        .map_err(|e| refused(e.to_string()))?;
                }
                let tls = match smtp.tls {
                    SmtpTls::None => "plain",
                    SmtpTls::Starttls => "starttls",
                    SmtpTls::Tls => "tls",
                };
                (
                    Inner::Smtp(std::sync::Arc::new(SmtpPool::new(smtp.clone()))),
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
        let subject = one_line(&mail.subject);
        let mut builder = Message::builder().from(self.from.clone());
        builder = if subject.contains("=?") {
            builder.raw_header(HeaderValue::dangerous_new_pre_encoded(
                HeaderName::new_from_ascii_str("Subject"),
                subject.clone(),
                encoded_words(&subject),
            ))
        } else {
            builder.subject(subject)
        };
        builder = builder.message_id(Some(mail.message_id.clone()));
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
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| MailError::Build(e.to_string()))
    }

    /// Sends `message`: [`Mailer::begin`], then [`Handover::finish`] at once.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        self.begin(message).await?.finish().await
    }

    /// The first step of a send: over SMTP the mail is opened (MAIL, RCPT, DATA), and the
    /// server has taken nothing yet; [`Handover::finish`] hands the message over.
    pub async fn begin(&self, message: Message) -> Result<Handover<'_>, SendError> {
        let started = std::time::Instant::now();
        let step = match &self.inner {
            Inner::Smtp(pool) => {
                let body = message.formatted();
                let conversation = self
                    .within(self.send_timeout, pool.begin(message.envelope(), &body))
                    .await?;
                Step::Smtp(Box::new(conversation), body)
            }
            Inner::File(t) => Step::File(t, Box::new(message)),
        };
        Ok(Handover {
            mailer: self,
            step,
            spent: started.elapsed(),
        })
    }

    async fn within<T>(
        &self,
        limit: Duration,
        step: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, SendError> {
        match tokio::time::timeout(limit, step).await {
            Ok(result) => result.map_err(classify_smtp),
            Err(_) => Err(SendError::Relay {
                code: None,
                throttled: false,
                detail: format!(
                    "no complete answer from the SMTP server within {}",
                    humantime::format_duration(self.send_timeout)
                ),
            }),
        }
    }

    /// Whether the transport can be reached now (SMTP: a NOOP over a pooled or new
    /// connection).
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        match &self.inner {
            Inner::Smtp(pool) => match tokio::time::timeout(timeout, pool.check()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            },
            Inner::File(_) => Ok(()),
        }
    }

    /// Closes the connections kept open (SMTP: QUIT on each), within `mail.smtp.timeout`.
    pub async fn close(&self) {
        if let Inner::Smtp(pool) = &self.inner {
            let _ = tokio::time::timeout(self.send_timeout, pool.close()).await;
        }
    }
}

/// A send begun ([`Mailer::begin`]), its message not yet handed over.
pub struct Handover<'a> {
    mailer: &'a Mailer,
    step: Step<'a>,
    /// The first step's share of `mail.smtp.timeout`.
    spent: Duration,
}

enum Step<'a> {
    Smtp(Box<Conversation<'a>>, Vec<u8>),
    File(&'a AsyncFileTransport<Tokio1Executor>, Box<Message>),
}

impl Handover<'_> {
    /// Hands the message over: `Ok` once the server (or the folder) has taken it. Within what
    /// is left of `mail.smtp.timeout` after the first step.
    pub async fn finish(self) -> Result<(), SendError> {
        match self.step {
            Step::Smtp(conversation, body) => {
                let left = self.mailer.send_timeout.saturating_sub(self.spent);
                self.mailer.within(left, conversation.finish(&body)).await
            }
            Step::File(t, message) => t.send(*message).await.map(|_| ()).map_err(|e| {
                // A full disk or a missing folder may well be fixed by the operator.
                SendError::Transient {
                    code: None,
                    detail: e.to_string(),
                }
            }),
        }
    }
}

fn classify_smtp(e: lettre::transport::smtp::Error) -> SendError {
    let code = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
    classify(code, e.is_permanent(), e.to_string())
}

/// Replies that are about the relay or the session, whatever command they answer: 421 (the
/// server closes the channel), 454 (TLS or login unavailable for now), and the login refusals
/// 530, 534, 535, 538 (the relay's settings are wrong; every mail would meet the same).
const RELAY_CODES: [u16; 6] = [421, 454, 530, 534, 535, 538];

/// What a failure says: with no reply code at all (refused, reset, TLS, timeout, garbled
/// reply) or with one of [`RELAY_CODES`], the relay is at fault; a 421/451 that says "too
/// many", "rate" or "throttled" is a push-back; any other 4xx/5xx is about the message.
pub fn classify(code: Option<u16>, permanent: bool, detail: String) -> SendError {
    let throttled = matches!(code, Some(421 | 451)) && says_slow_down(&detail);
    match code {
        None => SendError::Relay {
            code,
            detail,
            throttled: false,
        },
        Some(c) if throttled || RELAY_CODES.contains(&c) => SendError::Relay {
            code,
            detail,
            throttled,
        },
        Some(_) if permanent => SendError::Permanent { code, detail },
        Some(_) => SendError::Transient { code, detail },
    }
}

/// Whether a reply's text asks the client to send slower ("too many messages", "rate limit
/// exceeded", "throttled"). "rate" counts only where a word begins, so "generated" does not.
fn says_slow_down(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("too many")
        || t.contains("throttl")
        || t.match_indices("rate")
            .any(|(i, _)| i == 0 || !t.as_bytes()[i - 1].is_ascii_alphabetic())
}

/// Header values cannot span lines; a template that renders a newline into the subject must
/// not be able to inject headers.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` as RFC 2047 encoded words (UTF-8, base64), folded one word a line.
///
/// lettre writes an ASCII subject as it is, so a name holding `=?utf-8?q?...=0D=0A...?=`
/// would reach the reader as an encoded word of the sender's making, which mail readers
/// decode, line break included. Encoded by us, the text is shown as it was written.
fn encoded_words(text: &str) -> String {
    use base64::Engine;
    // 39 bytes make 52 base64 characters: each word fits a line with room for "Subject: ".
    const CHUNK: usize = 39;
    let mut words = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        words.push(format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        ));
        rest = tail;
    }
    words.join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_faults_are_told_from_answers_about_the_message() {
        let relay = |r: &SendError| matches!(r, SendError::Relay { .. });
        let throttled = |r: &SendError| {
            matches!(
                r,
                SendError::Relay {
                    throttled: true,
                    ..
                }
            )
        };
        // No reply at all: refused, reset, TLS, timeout.
        assert!(relay(&classify(None, false, "Connection refused".into())));
        for code in [421, 454, 530, 535] {
            let r = classify(
                Some(code),
                code >= 500,
                "4.3.2 service not available".into(),
            );
            assert!(relay(&r) && !throttled(&r), "{code}: {r:?}");
        }
        let r = classify(
            Some(421),
            false,
            "4.7.0 Too many messages, slow down".into(),
        );
        assert!(throttled(&r));
        let r = classify(Some(451), false, "4.7.1 Rate limit exceeded".into());
        assert!(throttled(&r));
        let r = classify(Some(451), false, "4.4.5 Throttling: retry later".into());
        assert!(throttled(&r));
        // Answers about the message itself.
        let r = classify(Some(451), false, "4.7.1 Greylisted, try again later".into());
        assert!(
            matches!(
                r,
                SendError::Transient {
                    code: Some(451),
                    ..
                }
            ),
            "{r:?}"
        );
        let r = classify(Some(451), false, "4.3.0 message generated an error".into());
        assert!(matches!(r, SendError::Transient { .. }), "{r:?}");
        let r = classify(Some(550), true, "5.1.1 no such mailbox".into());
        assert!(
            matches!(
                r,
                SendError::Permanent {
                    code: Some(550),
                    ..
                }
            ),
            "{r:?}"
        );
        let r = classify(
            Some(452),
            false,
            "4.2.2 mailbox full: too many messages".into(),
        );
        assert!(
            matches!(r, SendError::Transient { .. }),
            "a 452 is about the mailbox: {r:?}"
        );
    }

    #[test]
    fn encoded_words_split_on_characters_and_stay_short() {
        let text = format!(
            "=?utf-8?q?X=0D=0ABcc:_evil@attacker.example?= {}",
            "é".repeat(40)
        );
        let encoded = encoded_words(&text);
        let mut decoded = Vec::new();
        for word in encoded.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
            let b64 = word
                .strip_prefix("=?utf-8?b?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap();
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            // Each word is whole characters on its own.
            assert!(std::str::from_utf8(&bytes).is_ok(), "{word}");
            decoded.extend(bytes);
        }
        assert_eq!(String::from_utf8(decoded).unwrap(), text);
        assert!(encoded.is_ascii() && !encoded.contains("=0D"));
    }

    #[test]
    fn a_host_tls_cannot_name_is_refused_at_start() {
        for (tls, refused) in [("tls", true), ("starttls", true), ("none", false)] {
            let settings = crate::config::Settings::from_toml_overlay(&format!(
                "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"relay .example\"\ntls = \"{tls}\"\n"
            ))
            .expect("settings");
            match Mailer::from_settings(&settings.mail) {
                Err(e) => {
                    assert!(refused, "{tls}: {e}");
                    let e = e.to_string();
                    assert!(
                        e.contains("mail.smtp.host") && e.contains("relay .example"),
                        "{e}"
                    );
                }
                Ok(_) => assert!(!refused, "{tls}: taken"),
            }
        }
    }

    #[test]
    fn subjects_are_folded_to_one_line() {
        assert_eq!(one_line(" a\r\nBcc: x@y\n b "), "a Bcc: x@y b");
    }

    /// Whatever encoding lettre picks, each part decodes to the text it was given (line ends
    /// aside), the parts are text/plain and text/html, and the wire form is 7-bit safe with
    /// CRLF line ends of at most 998 octets (RFC 5322).
    #[test]
    fn parts_decode_to_the_text_they_were_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = crate::config::Settings::from_toml_overlay(&format!(
            "[mail]\ntransport = \"file\"\nfile_dir = {:?}\n",
            dir.path()
        ))
        .expect("settings");
        let mailer = Mailer::from_settings(&settings.mail).expect("mailer");
        let long = "word ".repeat(250);
        let text = format!("Hello M\u{fc}ller,\n\n{long}\r\nline=end \n\n--\nfooter\n");
        let html = format!(
            "<p>Gr\u{fc}\u{df}e &amp; <a href=\"https://x.example/?a=1&b=2\">{long}</a></p>\n"
        );
        let mail = OutgoingMail {
            to: vec!["buyer@acme.example".parse().expect("address")],
            cc: Vec::new(),
            subject: "Subject".into(),
            text: text.clone(),
            html: html.clone(),
            message_id: "<m@renewal-worker.invalid>".into(),
        };
        let wire = mailer.build_message(&mail).expect("message").formatted();
        assert!(wire.is_ascii());
        let wire_text = String::from_utf8(wire.clone()).expect("ascii");
        for line in wire_text.split("\r\n") {
            assert!(!line.contains(['\r', '\n']), "a bare line end: {line:?}");
            assert!(line.len() <= 998, "{} octets: {line:?}", line.len());
        }

        let parsed = mail_parser::MessageParser::default()
            .parse(&wire)
            .expect("parses");
        assert_eq!((parsed.text_body.len(), parsed.html_body.len()), (1, 1));
        use mail_parser::MimeHeaders as _;
        let is = |part: u32, subtype| {
            parsed
                .part(part)
                .is_some_and(|p| p.is_content_type("text", subtype))
        };
        assert!(is(parsed.text_body[0], "plain") && is(parsed.html_body[0], "html"));
        let lf = |s: &str| s.replace("\r\n", "\n");
        assert_eq!(lf(&parsed.body_text(0).expect("text")), lf(&text));
        assert_eq!(lf(&parsed.body_html(0).expect("html")), lf(&html));
    }
}
