//! Handlebars rendering. Two registries over one template folder: HTML with escaping of every
//! value (they come from resellers and the marketplace), plain text and subjects without (a
//! text part full of `&amp;` helps nobody). Both are strict: a misspelt field is an error, not
//! an empty string in a customer's inbox.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;

use super::{MailContext, MailFacts, NotificationKind};
use crate::config::MarketplaceSettings;
use crate::domain::SubscriptionContext;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template folder {path} is missing or unreadable: {reason}")]
    Folder { path: PathBuf, reason: String },
    #[error("template {path} is missing")]
    Missing { path: PathBuf },
    #[error("template {path} does not compile: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("template {path} does not render: {reason}")]
    Render { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug)]
pub struct Renderer {
    dir: PathBuf,
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

const PARTS: [(&str, bool); 3] = [
    ("subject.hbs", false),
    ("body.txt.hbs", false),
    ("body.html.hbs", true),
];

impl Renderer {
    /// Loads every template and renders each kind once with sample data, so a broken template
    /// stops the start instead of the first real mail of its kind. Partials live in
    /// `partials/`: `NAME.html.hbs` for the HTML registry, `NAME.txt.hbs` for text and subjects.
    pub fn load(dir: &Path, marketplace: &MarketplaceSettings) -> Result<Self, TemplateError> {
        if !dir.is_dir() {
            return Err(TemplateError::Folder {
                path: dir.to_owned(),
                reason: "not a folder".into(),
            });
        }
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_escape_fn(escape_html);
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);

        let partials = dir.join("partials");
        if partials.is_dir() {
            let entries = std::fs::read_dir(&partials).map_err(|e| TemplateError::Folder {
                path: partials.clone(),
                reason: e.to_string(),
            })?;
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                let file = path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default();
                let (registry, name) = if let Some(name) = file.strip_suffix(".html.hbs") {
                    (&mut html, name)
                } else if let Some(name) = file.strip_suffix(".txt.hbs") {
                    (&mut text, name)
                } else {
                    continue;
                };
                registry
                    .register_partial(name, read(&path)?)
                    .map_err(|e| compile_error(&path, &e))?;
            }
        }

        for kind in NotificationKind::ALL {
            for (part, is_html) in PARTS {
                let path = dir.join(kind.as_str()).join(part);
                let registry = if is_html { &mut html } else { &mut text };
                registry
                    .register_template_string(&template_name(kind, part), read(&path)?)
                    .map_err(|e| compile_error(&path, &e))?;
            }
        }
        let renderer = Self {
            dir: dir.to_owned(),
            html,
            text,
        };
        let sample = sample_context();
        for kind in NotificationKind::ALL {
            renderer.render(
                kind,
                &MailContext::new(kind, &sample, marketplace, MailFacts::sample(kind)),
            )?;
        }
        Ok(renderer)
    }

    pub fn render(
        &self,
        kind: NotificationKind,
        ctx: &MailContext,
    ) -> Result<Rendered, TemplateError> {
        // Made once for the three parts (handlebars would serialize `ctx` for each).
        let ctx = handlebars::Context::wraps(ctx).map_err(|e| TemplateError::Render {
            path: self.dir.join(kind.as_str()),
            reason: e.to_string(),
        })?;
        let part = |registry: &Handlebars<'static>, part: &str| {
            registry
                .render_with_context(&template_name(kind, part), &ctx)
                .map_err(|e| TemplateError::Render {
                    path: self.dir.join(kind.as_str()).join(part),
                    reason: e.to_string(),
                })
        };
        Ok(Rendered {
            subject: part(&self.text, "subject.hbs")?.trim().to_owned(),
            text: part(&self.text, "body.txt.hbs")?,
            html: part(&self.html, "body.html.hbs")?,
        })
    }
}

/// Escapes what is markup in element content and quoted attributes, and nothing else:
/// handlebars' default also rewrites `=` and backticks, which mangles every link's query
/// string in the HTML source.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn template_name(kind: NotificationKind, part: &str) -> String {
    format!("{}/{part}", kind.as_str())
}

fn read(path: &Path) -> Result<String, TemplateError> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TemplateError::Missing {
                path: path.to_owned(),
            }
        } else {
            TemplateError::Folder {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        }
    })
}

fn compile_error(path: &Path, e: &dyn std::fmt::Display) -> TemplateError {
    TemplateError::Compile {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// A complete subscription with made-up parties, for template checks and previews.
pub fn sample_context() -> SubscriptionContext {
    use crate::domain::*;
    use crate::domain::{Customer, Reseller, Subscription};
    // Constants known to parse: a failure here is a programming error caught by every test.
    let reseller_id = ResellerId::parse("R-SAMPLE").expect("sample reseller id");
    let customer_id = CustomerId::parse("C-SAMPLE").expect("sample customer id");
    let seats = Seats::new(10).expect("sample seats");
    SubscriptionContext {
        reseller: Reseller {
            id: reseller_id.clone(),
            name: "Acme IT <Sample>".into(),
            email: EmailAddress::parse("ops@acme.example").expect("sample email"),
            csn: Some(Csn::parse("5101234567").expect("sample csn")),
            timezone: TimeZoneName::parse("America/New_York").expect("sample tz"),
            calendar: None,
        },
        customer: Customer {
            id: customer_id.clone(),
            reseller_id: reseller_id.clone(),
            name: "Globex & Sons".into(),
            email: EmailAddress::parse("it@globex.example").expect("sample email"),
        },
        subscription: Subscription {
            id: SubscriptionId::parse("S-SAMPLE").expect("sample id"),
            reseller_id,
            customer_id,
            product_id: ProductId::parse("057O1-WW6525-L347").expect("sample product"),
            plan: "AutoCAD LT".into(),
            billing: Billing::AnnualPrepaid,
            seats,
            assigned_licenses: AssignedLicenses::parse_for(3, seats).expect("sample licenses"),
            term_start: chrono::NaiveDate::from_ymd_opt(2025, 12, 28).expect("sample date"),
            term_end: chrono::NaiveDate::from_ymd_opt(2026, 12, 28).expect("sample date"),
            auto_renew: true,
            notify_email: None,
            renewal: Default::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    // The layout block's hash, the partial called inside the block and the text partials all
    // reach the output.
    #[test]
    fn partials_and_the_layout_block_render() {
        let settings = Settings::from_toml_overlay("").expect("settings");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let renderer = Renderer::load(&dir, &settings.marketplace).expect("load");
        let kind = NotificationKind::Ready;
        let sample = sample_context();
        let ctx = MailContext::new(
            kind,
            &sample,
            &settings.marketplace,
            MailFacts::sample(kind),
        );
        let r = renderer.render(kind, &ctx).expect("render");
        assert!(r.html.starts_with("<!DOCTYPE html>"), "{}", r.html);
        assert!(r.html.contains("<title>Your subscription is ready</title>"));
        assert!(
            r.html
                .contains("<td>Acme IT &lt;Sample&gt; (CSN 5101234567)</td>")
        );
        assert!(r.html.trim_end().ends_with("</html>"));
        assert!(
            r.text
                .contains("  Reseller:    Acme IT <Sample> (CSN 5101234567)\n")
        );
        assert!(r.text.contains("\n--\n"), "{}", r.text);
    }
}
