//! Snapshot tests (insta) of the dashboard's main screens and the text
//! report, rendered from fixed data. The expected screens live in
//! `tests/screens/*.snap`; after an intended change, run `cargo insta
//! review` (or `INSTA_UPDATE=always cargo test -p stateful-ci-dashboard`)
//! and review the diff.

mod fixture;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use stateful_ci_dashboard::text;
use stateful_ci_dashboard::tui::{Action, App, Pane, draw};

fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(140, 34)).unwrap();
    t.draw(|f| draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, actual: &str) {
    insta::with_settings!({
        snapshot_path => "screens",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, actual);
    });
}

fn key(app: &mut App, code: KeyCode) -> Action {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

#[test]
fn main_screen() {
    let app = App::new(fixture::status());
    let s = screen(&app);
    check("main", &s);
    // Facts the golden file must keep, spelled out so a careless
    // regeneration cannot silently drop them.
    assert!(s.contains("denied (save_not_allowed)"));
    assert!(s.contains("pull_request_target"));
    assert!(s.contains("health   ok, protocol 1, Worker 0.1.0"));
    assert!(s.contains("Recent runs (5 of 5)"));
    assert!(s.contains("pr:5"));
}

#[test]
fn filtered_by_trust_and_decision() {
    let mut app = App::new(fixture::status());
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "trust:external decision:denied");
    let prompt = screen(&app);
    assert!(prompt.contains("filter (repo: ref: trust: decision:"));
    assert!(prompt.contains("trust:external decision:denied_"));
    key(&mut app, KeyCode::Enter);
    let s = screen(&app);
    check("filtered", &s);
    assert!(s.contains("Recent runs (1 of 5) filter: trust:external decision:denied"));
    assert!(s.contains("denied (save_not_allowed)"));
    assert!(!s.contains("restored"));
    key(&mut app, KeyCode::Char('c'));
    assert!(screen(&app).contains("Recent runs (5 of 5)"));
}

#[test]
fn filter_by_ref_and_repository() {
    let mut app = App::new(fixture::status());
    app.filter = stateful_ci_dashboard::tui::Filter::parse("repo:acme ref:refs/pull");
    assert_eq!(app.visible_runs().len(), 2);
    assert!(
        app.visible_runs()
            .iter()
            .all(|r| r.event.as_deref() == Some("pull_request"))
    );
    app.filter = stateful_ci_dashboard::tui::Filter::parse("repo:other");
    assert!(app.visible_runs().is_empty());
    assert!(screen(&app).contains("Recent runs (0 of 5)"));
}

#[test]
fn snapshot_detail_of_a_pull_request_save() {
    let mut app = App::new(fixture::status());
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    let s = screen(&app);
    assert!(s.contains("Snapshot detail"));
    assert!(s.contains(&format!("manifests/{}", "b".repeat(64))));
    assert!(s.contains("event      pull_request on refs/pull/5/merge"));
    assert!(s.contains("previous     none (first snapshot of the scope)"));
    check("detail", &s);
    // Any key closes it.
    key(&mut app, KeyCode::Char('x'));
    assert!(!screen(&app).contains("Snapshot detail"));
}

#[test]
fn scopes_pane_and_storage() {
    let mut app = App::new(fixture::status());
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus, Pane::Scopes);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert!(screen(&app).contains("scope        pr:5 (generation 1)"));
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('s'));
    let s = screen(&app);
    assert!(s.contains("unique      1.5 MiB"));
    assert!(s.contains("referenced  2.0 MiB"));
    check("storage", &s);
}

#[test]
fn no_color_draws_without_colours() {
    use ratatui::style::Color;
    let colours = |app: &App| {
        let mut t = Terminal::new(TestBackend::new(140, 34)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        buf.content()
            .iter()
            .filter(|c| c.fg != Color::Reset)
            .count()
    };
    let mut app = App::new(fixture::status());
    assert!(
        colours(&app) > 0,
        "denied rows and the focused pane are coloured"
    );
    app.color = false;
    assert_eq!(colours(&app), 0);
}

#[test]
fn quit_and_refresh_keys() {
    let mut app = App::new(fixture::status());
    assert_eq!(key(&mut app, KeyCode::Char('r')), Action::Refresh);
    assert_eq!(key(&mut app, KeyCode::Char('q')), Action::Quit);
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
    // While typing a filter, q is a letter.
    key(&mut app, KeyCode::Char('/'));
    assert_eq!(key(&mut app, KeyCode::Char('q')), Action::None);
}

#[test]
fn not_deployed_and_backend_down() {
    let mut st = fixture::status();
    st.deployment = None;
    let b = st.backend.as_mut().unwrap();
    b.health = None;
    b.health_error = Some("GET http://127.0.0.1:9/v1/health: cannot reach it".into());
    b.admin = false;
    b.admin_error = Some("no admin token".into());
    b.runs.clear();
    let s = screen(&App::new(st.clone()));
    assert!(s.contains("not deployed (run `stateful-ci deploy`)"));
    assert!(s.contains("health   DOWN"));
    assert!(s.contains("admin routes unavailable"));
    let t = text::render(&st);
    assert!(t.contains("not deployed"));
    assert!(t.contains("runs       not shown: no admin token"));
}

#[test]
fn text_report() {
    let t = text::render(&fixture::status());
    assert!(t.contains("preset     node"));
    assert!(t.contains("drift      none"));
    check("status", &t);
}
