//! Handlebars rendering. Two registries over one template folder: HTML with escaping of every
//! value (they come from resellers and the marketplace), plain text and subjects without (a
//! text part full of `&amp;` helps nobody). Both are strict: a misspelt field is an error, not
//! an empty string in a customer's inbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;

use super::templates::{TemplateFile, TemplateFiles};
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
    /// Where each template came from (an override's path, or the built-in name), for errors.
    origins: HashMap<String, PathBuf>,
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

const PARTS: [(&str, bool); 3] = [
    ("subject.hbs", false),
    ("body.txt.hbs", false),
    ("body.html.hbs", true),
];

impl Renderer {
    /// Loads every template (the built-in set, with the files under `dir` in place of theirs
    /// when `dir` is not empty) and renders each kind once with sample data, so a broken template
    /// stops the start instead of the first real mail of its kind. Partials and layout blocks
    /// are written in at load, since expanding them for every mail cost a tenth of the
    /// daemon's mails/s (docs/PERFORMANCE.md).
    pub fn load(dir: &Path, marketplace: &MarketplaceSettings) -> Result<Self, TemplateError> {
        Self::load_inlining(dir, marketplace, true)
    }

    /// [`Renderer::load`], with plain partials written into the templates that call them or
    /// (`inline` false) left to handlebars; the output is the same.
    fn load_inlining(
        dir: &Path,
        marketplace: &MarketplaceSettings,
        inline: bool,
    ) -> Result<Self, TemplateError> {
        let files = TemplateFiles::new(dir)?;
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_escape_fn(escape_html);
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        for registry in [&mut html, &mut text] {
            registry.register_helper("plural", Box::new(plural));
        }

        // Partial sources by name, to write plain ones into the templates below.
        let mut html_partials = HashMap::new();
        let mut text_partials = HashMap::new();
        for (file, partial) in files.partials()? {
            let (registry, known, name) = if let Some(name) = file.strip_suffix(".html.hbs") {
                (&mut html, &mut html_partials, name)
            } else if let Some(name) = file.strip_suffix(".txt.hbs") {
                (&mut text, &mut text_partials, name)
            } else {
                continue;
            };
            registry
                .register_partial(name, &partial.source)
                .map_err(|e| compile_error(&partial.shown, &e))?;
            known.insert(name.to_owned(), partial.source);
        }

        let mut origins = HashMap::new();
        for kind in NotificationKind::ALL {
            for (part, is_html) in PARTS {
                let name = template_name(kind, part);
                let TemplateFile { shown, mut source } = files.read(&name)?;
                let (registry, partials) = if is_html {
                    (&mut html, &html_partials)
                } else {
                    (&mut text, &text_partials)
                };
                if inline {
                    source = inline_plain_partials(&source, partials);
                    let escape: fn(&str) -> String = if is_html {
                        escape_html
                    } else {
                        handlebars::no_escape
                    };
                    source = inline_layout_block(&source, partials, escape);
                }
                registry
                    .register_template_string(&name, source)
                    .map_err(|e| compile_error(&shown, &e))?;
                origins.insert(name, shown);
            }
        }
        let renderer = Self {
            origins,
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
            path: PathBuf::from(kind.as_str()),
            reason: e.to_string(),
        })?;
        let part = |registry: &Handlebars<'static>, part: &str| {
            let name = template_name(kind, part);
            registry
                .render_with_context(&name, &ctx)
                .map_err(|e| TemplateError::Render {
                    path: self
                        .origins
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| name.into()),
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

/// `source` with each line that is only `{{> name}}` replaced by that partial's text, where the
/// partial is plain: it ends its last line, and calls no partial and no partial block itself.
/// Handlebars renders such a line as exactly that text, but first copies the whole template
/// context for the partial (tens of allocations per call, per mail); written in, it is read
/// in place. Anything else (indented calls, parameters, blocks, `~`) is left to handlebars.
fn inline_plain_partials(source: &str, partials: &HashMap<String, String>) -> String {
    let plain = |text: &&String| {
        (text.is_empty() || text.ends_with('\n'))
            && !text.contains("{{>")
            && !text.contains("{{#>")
            && !text.contains("@partial-block")
    };
    let mut out = String::with_capacity(source.len());
    for line in source.split_inclusive('\n') {
        let call = line
            .trim_end_matches(['\n', '\r'])
            .trim_end()
            .strip_prefix("{{>")
            .and_then(|c| c.strip_suffix("}}"))
            .map(str::trim)
            .filter(|name| !name.contains(char::is_whitespace));
        match call.and_then(|name| partials.get(name)).filter(plain) {
            Some(text) => out.push_str(text),
            None => out.push_str(line),
        }
    }
    out
}

/// `source` written into its layout, where it is one block partial call that wraps it all:
/// `{{#> name k="v" ...}}` as the first line and `{{/name}}` as the last, the hash's values
/// plain string literals, and the partial `name` itself plain apart from one
/// `{{> @partial-block}}` line and uses of the hash as `{{k}}` or `{{{k}}}` (which get the
/// value, escaped as handlebars would). The block's own lines, which may neither name the
/// hash's keys nor call partials (whose text would see the hash), take the place of
/// `{{> @partial-block}}`. Handlebars renders such a
/// call as exactly that text, but copies the template context with the hash merged in for
/// it, per mail; written in, nothing is copied.
/// Anything else is left to handlebars.
fn inline_layout_block(
    source: &str,
    partials: &HashMap<String, String>,
    escape: fn(&str) -> String,
) -> String {
    try_inline_layout_block(source, partials, escape).unwrap_or_else(|| source.to_owned())
}

fn try_inline_layout_block(
    source: &str,
    partials: &HashMap<String, String>,
    escape: fn(&str) -> String,
) -> Option<String> {
    let body = source.strip_suffix('\n').unwrap_or(source);
    let (open, rest) = body.split_once('\n')?;
    let (inner, close) = rest.rsplit_once('\n')?;
    let call = open.strip_prefix("{{#>")?.strip_suffix("}}")?.trim();
    let (name, hash) = call.split_once(' ').unwrap_or((call, ""));
    if close != format!("{{{{/{name}}}}}") {
        return None;
    }
    let layout = partials.get(name)?;
    // The hash: `key="value"` pairs, nothing that needs handlebars to read.
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut values: Vec<(&str, &str)> = Vec::new();
    let mut hash = hash.trim();
    while !hash.is_empty() {
        let (key, after) = hash.split_once("=\"")?;
        let (value, after) = after.split_once('"')?;
        if !word(key) || value.contains(['\\', '{', '}', '\n']) {
            return None;
        }
        values.push((key, value));
        hash = after.trim_start();
    }
    // Whether any tag of `text` mentions a key of the hash (or might: a key within a longer
    // name counts too).
    let names_a_key = |text: &str| {
        text.split("{{")
            .skip(1)
            .any(|tag| values.iter().any(|(k, _)| tag.contains(k)))
    };
    // Whether any tag of `text` calls a partial or a partial block (`{{>`, `{{~#>`, ...).
    let calls_partial = |text: &str| {
        text.split("{{")
            .skip(1)
            .any(|tag| tag.trim_start_matches(['~', '#']).starts_with('>'))
    };
    let inner = format!("{inner}\n");
    if calls_partial(&inner) || names_a_key(&inner) || !layout.ends_with('\n') {
        return None;
    }
    let mut out = String::with_capacity(layout.len() + inner.len());
    let mut blocks = 0;
    for line in layout.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']) == "{{> @partial-block}}" {
            out.push_str(&inner);
            blocks += 1;
            continue;
        }
        let mut line = line.to_owned();
        for (key, value) in &values {
            line = line
                .replace(&format!("{{{{{{{key}}}}}}}"), value)
                .replace(&format!("{{{{{key}}}}}"), &escape(value));
        }
        if names_a_key(&line) || calls_partial(&line) {
            return None;
        }
        out.push_str(&line);
    }
    (blocks == 1).then_some(out)
}

// `{{plural n "license" "licenses"}}`: the singular for exactly one, else the plural (zero
// included, as English has it). A count that is not a whole number is a template error, so a
// misspelt field cannot pass as "many".
handlebars::handlebars_helper!(plural: |n: u64, one: str, many: str| {
    if n == 1 { one } else { many }
});

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
            contact_name: Some("Dana Reyes".into()),
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
            open_order: false,
            provisioning: Default::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn plural_says_one_for_one_only() {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_helper("plural", Box::new(plural));
        let say = |n: serde_json::Value| {
            hb.render_template(
                r#"{{n}} {{plural n "license" "licenses"}}"#,
                &serde_json::json!({ "n": n }),
            )
        };
        assert_eq!(say(0.into()).unwrap(), "0 licenses");
        assert_eq!(say(1.into()).unwrap(), "1 license");
        assert_eq!(say(2.into()).unwrap(), "2 licenses");
        // Not a count: an error, never a guess.
        assert!(say("x".into()).is_err());
        assert!(
            hb.render_template(r#"{{plural missing "a" "b"}}"#, &serde_json::json!({}))
                .is_err()
        );
    }

    // The shipped templates, and one with every form that is left to handlebars.
    #[test]
    fn written_in_partials_render_as_handlebars_renders_them() {
        let settings = Settings::from_toml_overlay("").expect("settings");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let inlined = Renderer::load_inlining(&dir, &settings.marketplace, true).expect("load");
        let called = Renderer::load_inlining(&dir, &settings.marketplace, false).expect("load");
        let sample = sample_context();
        for kind in NotificationKind::ALL {
            let ctx = MailContext::new(
                kind,
                &sample,
                &settings.marketplace,
                MailFacts::sample(kind),
            );
            assert_eq!(
                inlined.render(kind, &ctx).expect("render"),
                called.render(kind, &ctx).expect("render"),
                "{kind:?}"
            );
        }
        assert_ne!(
            inlined
                .text
                .get_template("ready/body.txt.hbs")
                .map(|t| t.elements.len()),
            called
                .text
                .get_template("ready/body.txt.hbs")
                .map(|t| t.elements.len()),
            "the text body's partials are written in"
        );

        // Every shipped template is left with no partial to expand per mail.
        for kind in NotificationKind::ALL {
            for (part, is_html) in PARTS {
                let registry = if is_html {
                    &inlined.html
                } else {
                    &inlined.text
                };
                let template = registry
                    .get_template(&template_name(kind, part))
                    .expect("registered");
                assert!(
                    !template.elements.iter().any(|e| matches!(
                        e,
                        handlebars::template::TemplateElement::PartialExpression(_)
                            | handlebars::template::TemplateElement::PartialBlock(_)
                    )),
                    "{kind:?} {part} still calls a partial"
                );
            }
        }

        let layouts = HashMap::from([
            (
                "layout".to_owned(),
                "<h1>{{title}}</h1>\n{{> @partial-block}}\n<i>{{{title}}}</i> {{x}}\n".to_owned(),
            ),
            (
                "uses".to_owned(),
                "{{#if title}}t{{/if}}\n{{> @partial-block}}\n".to_owned(),
            ),
            (
                "nested".to_owned(),
                "{{> plain}}\n{{> @partial-block}}\n".to_owned(),
            ),
        ]);
        let escape: fn(&str) -> String = escape_html;
        assert_eq!(
            inline_layout_block(
                "{{#> layout title=\"A & B\"}}\n<p>{{y}}</p>\n{{/layout}}\n",
                &layouts,
                escape
            ),
            "<h1>A &amp; B</h1>\n<p>{{y}}</p>\n<i>A & B</i> {{x}}\n"
        );
        for left in [
            // the block names a key of the hash; a key used other than as `{{key}}`
            "{{#> layout title=\"A\"}}\n{{title}}\n{{/layout}}\n",
            "{{#> uses title=\"A\"}}\nb\n{{/uses}}\n",
            // the block calls a partial (whose text might name a key)
            "{{#> layout title=\"A\"}}\n{{> plain}}\n{{/layout}}\n",
            "{{#> layout}}\n{{~> plain}}\n{{/layout}}\n",
            // the layout calls a partial; a value handlebars must read; text around the call
            "{{#> nested}}\nb\n{{/nested}}\n",
            "{{#> layout title=x}}\nb\n{{/layout}}\n",
            "{{#> layout title=\"{{x}}\"}}\nb\n{{/layout}}\n",
            "\n{{#> layout title=\"A\"}}\nb\n{{/layout}}\n",
            "{{#> layout title=\"A\"}}\nb\n{{/layout}}\nafter\n",
            "{{#> none}}\nb\n{{/none}}\n",
        ] {
            assert_eq!(inline_layout_block(left, &layouts, escape), left);
        }

        let partials = HashMap::from([
            ("plain".to_owned(), "P {{x}}\n".to_owned()),
            ("calls".to_owned(), "{{> plain}}\n".to_owned()),
            ("open".to_owned(), "no line end".to_owned()),
        ]);
        let source = "a\n{{> plain}}\n  {{> plain}}\n{{> plain x}}\n{{~> plain}}\n\
                      {{> calls}}\n{{> open}}\n{{> none}}\nb {{> plain}}\n{{>plain}}\r\n";
        assert_eq!(
            inline_plain_partials(source, &partials),
            "a\nP {{x}}\n  {{> plain}}\n{{> plain x}}\n{{~> plain}}\n\
             {{> calls}}\n{{> open}}\n{{> none}}\nb {{> plain}}\nP {{x}}\n"
        );
    }
}
