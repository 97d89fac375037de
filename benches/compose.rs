//! What composing one mail costs, step by step, for every kind: the template context, the
//! three rendered parts, the lettre message (body encoding included) and its wire form.
//! Run: `cargo bench --bench compose`. Prints µs per mail; asserts nothing but that each step
//! works. Section 2 of `throughput` measures the same steps inside the whole delivery.

use std::time::Instant;

use renewal_worker::config::Settings;
use renewal_worker::mail::{Mailer, OutgoingMail};
use renewal_worker::notify::{
    MailContext, MailFacts, NotificationKind, Renderer, message_id, sample_context,
};

const ROUNDS: u32 = 20_000;

/// Runs `f` in ten spells of `ROUNDS / 10` calls after a warm-up; µs per call in the quickest
/// spell (this machine's speed wanders with its neighbours' load; the least disturbed spell is
/// the one comparable from run to run).
fn per_call<T>(mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..ROUNDS / 10 {
        std::hint::black_box(f());
    }
    (0..10)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ROUNDS / 10 {
                std::hint::black_box(f());
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS / 10)
        })
        .fold(f64::INFINITY, f64::min)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The SMTP pool's clean-up task needs a runtime, though nothing is sent here.
    let settings = Settings::from_toml_overlay(&format!(
        "[templates]\ndir = {:?}\n[mail]\ntransport = \"smtp\"\n",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
    ))
    .expect("settings");
    let renderer = Renderer::load(&settings.templates.dir, &settings.marketplace).expect("load");
    let mailer = Mailer::from_settings(&settings.mail).expect("mailer");
    let ctx = sample_context();
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "kind (µs per mail)", "context", "render", "message", "wire", "all", "bytes"
    );
    for kind in NotificationKind::ALL {
        let details = MailFacts::sample(kind);
        let context =
            per_call(|| MailContext::new(kind, &ctx, &settings.marketplace, details.clone()));
        let mail_ctx = MailContext::new(kind, &ctx, &settings.marketplace, details.clone());
        let render = per_call(|| renderer.render(kind, &mail_ctx).expect("render"));
        let rendered = renderer.render(kind, &mail_ctx).expect("render");
        let mail = OutgoingMail {
            to: vec!["buyer@acme.example".parse().expect("address")],
            cc: Vec::new(),
            subject: rendered.subject.clone(),
            text: rendered.text.clone(),
            html: rendered.html.clone(),
            message_id: message_id("S1/ready", "renewal-worker.invalid"),
        };
        let message = per_call(|| mailer.build_message(&mail).expect("message"));
        let built = mailer.build_message(&mail).expect("message");
        let wire = per_call(|| built.formatted());
        let bytes = built.formatted().len();
        println!(
            "{:<22} {context:>9.1} {render:>9.1} {message:>9.1} {wire:>9.1} {:>9.1} {bytes:>7}",
            kind.as_str(),
            context + render + message + wire
        );
    }
}
