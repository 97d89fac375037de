use renewal_worker::config::Settings;
use renewal_worker::notify::{MailContext, MailFacts, NotificationKind, Renderer, TemplateError};

use crate::helpers::templates_dir;

fn copy_templates(to: &std::path::Path) {
    for entry in walk(&templates_dir()) {
        let rel = entry.strip_prefix(templates_dir()).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, dest).unwrap();
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn every_template_renders_with_sample_data_in_strict_mode() {
    let settings = Settings::from_toml_overlay("").unwrap();
    let renderer = Renderer::load(&templates_dir(), &settings.marketplace).unwrap();
    let sample = renewal_worker::notify::sample_context();
    for kind in NotificationKind::ALL {
        let ctx = MailContext::new(
            kind,
            &sample,
            &settings.marketplace,
            MailFacts::sample(kind),
        );
        let r = renderer.render(kind, &ctx).unwrap();
        assert!(
            !r.subject.is_empty() && !r.subject.contains('\n'),
            "{kind:?}"
        );
        assert!(
            r.text.contains("AutoCAD LT"),
            "{kind:?} text names the plan"
        );
        assert!(r.html.contains("<html"), "{kind:?} html uses the layout");
        // Values from outside are escaped in HTML and left alone in text.
        assert!(r.html.contains("Globex &amp; Sons"), "{kind:?}: {}", r.html);
        assert!(r.text.contains("Globex & Sons"), "{kind:?}");
        assert!(!r.text.contains("&amp;"), "{kind:?}");
    }
}

#[test]
fn a_broken_template_is_named_at_load() {
    let settings = Settings::from_toml_overlay("").unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_templates(dir.path());
    let broken = dir.path().join("activated/body.html.hbs");
    std::fs::write(&broken, "<p>{{#if details.download_url}}unclosed").unwrap();
    let err = Renderer::load(dir.path(), &settings.marketplace).unwrap_err();
    assert!(matches!(err, TemplateError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("activated/body.html.hbs"), "{err}");
}

#[test]
fn a_misspelt_field_is_an_error_not_an_empty_string() {
    let settings = Settings::from_toml_overlay("").unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_templates(dir.path());
    std::fs::write(
        dir.path().join("ready/subject.hbs"),
        "Ready: {{subscription.plna}}",
    )
    .unwrap();
    let err = Renderer::load(dir.path(), &settings.marketplace).unwrap_err();
    assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    assert!(err.to_string().contains("ready/subject.hbs"), "{err}");
}

/// An override folder need not hold every file: one it lacks is the built-in one.
#[test]
fn a_file_missing_from_the_overrides_is_the_built_in_one() {
    let settings = Settings::from_toml_overlay("").unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_templates(dir.path());
    std::fs::remove_file(dir.path().join("order_processed/body.txt.hbs")).unwrap();
    let partial = Renderer::load(dir.path(), &settings.marketplace).unwrap();
    let built_in = Renderer::load(std::path::Path::new(""), &settings.marketplace).unwrap();
    let sample = renewal_worker::notify::sample_context();
    let kind = NotificationKind::OrderProcessed;
    let ctx = MailContext::new(
        kind,
        &sample,
        &settings.marketplace,
        MailFacts::sample(kind),
    );
    assert_eq!(
        partial.render(kind, &ctx).unwrap(),
        built_in.render(kind, &ctx).unwrap()
    );
}
