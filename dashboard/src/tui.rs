//! The full-screen dashboard that bare `stateful-ci` opens on a terminal.
//!
//! [`App`] holds the state and reacts to keys ([`App::handle_key`]);
//! [`draw`] renders it, a pure function of the state, so every screen is
//! tested with ratatui's `TestBackend`. [`run`] is the only part that owns
//! the terminal: it restores it on quit, on error and (through ratatui's
//! panic hook) on panic; Ctrl-C arrives as a key in raw mode and quits.

use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use stateful_ci_protocol::wire::AdminSnapshot;

use crate::model::*;
use crate::text::{human_bytes, short_snapshot, utc};

/// Which list the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Runs,
    Scopes,
}

/// Run filter: `repo:`, `ref:`, `trust:`, `decision:` terms (substring,
/// case-insensitive) and bare words matching any column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub class: Option<String>,
    pub decision: Option<String>,
    pub words: Vec<String>,
}

impl Filter {
    pub fn parse(s: &str) -> Filter {
        let mut f = Filter::default();
        for term in s.split_whitespace() {
            let t = term.to_lowercase();
            match t.split_once(':') {
                Some(("repo" | "repository", v)) => f.repository = Some(v.into()),
                Some(("ref", v)) => f.git_ref = Some(v.into()),
                Some(("trust" | "class", v)) => f.class = Some(v.into()),
                Some(("decision", v)) => f.decision = Some(v.into()),
                _ => f.words.push(t),
            }
        }
        f
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, r: &RunRow) -> bool {
        let has = |field: &str, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| field.to_lowercase().contains(w.as_str()))
        };
        let all = format!(
            "{} {} {} {} {} {} {}",
            r.repository,
            r.git_ref.as_deref().unwrap_or(""),
            r.event.as_deref().unwrap_or(""),
            r.class,
            r.decision,
            r.scope,
            r.snapshot.as_deref().unwrap_or("")
        )
        .to_lowercase();
        has(&r.repository, &self.repository)
            && has(r.git_ref.as_deref().unwrap_or(""), &self.git_ref)
            && has(&r.class, &self.class)
            && has(&r.decision, &self.decision)
            && self.words.iter().all(|w| all.contains(w.as_str()))
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("repo", &self.repository),
            ("ref", &self.git_ref),
            ("trust", &self.class),
            ("decision", &self.decision),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}:{v}"));
            }
        }
        parts.extend(self.words.iter().cloned());
        parts.join(" ")
    }
}

/// What the loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Refresh,
    Quit,
}

/// The dashboard's state.
#[derive(Debug, Clone)]
pub struct App {
    pub status: Status,
    pub focus: Pane,
    pub run_sel: usize,
    pub scope_sel: usize,
    pub filter: Filter,
    /// The filter being typed, when the prompt is open.
    pub input: Option<String>,
    pub detail: bool,
    pub storage: bool,
    /// Colours on (off with NO_COLOR).
    pub color: bool,
}

/// One line of the scopes pane.
#[derive(Debug, Clone)]
pub struct ScopeItem {
    pub origin: String,
    pub scope: String,
    pub generation: u64,
    pub snapshots: Option<u64>,
    pub stored_bytes: u64,
    /// Detail lines for the head snapshot.
    pub detail: Vec<String>,
}

impl App {
    pub fn new(status: Status) -> App {
        App {
            status,
            focus: Pane::Runs,
            run_sel: 0,
            scope_sel: 0,
            filter: Filter::default(),
            input: None,
            detail: false,
            storage: false,
            color: true,
        }
    }

    /// Replace the data, keeping the selection in range.
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
        self.clamp();
    }

    fn clamp(&mut self) {
        let runs = self.visible_runs().len();
        let scopes = self.scopes().len();
        self.run_sel = self.run_sel.min(runs.saturating_sub(1));
        self.scope_sel = self.scope_sel.min(scopes.saturating_sub(1));
    }

    pub fn visible_runs(&self) -> Vec<&RunRow> {
        self.status
            .backend
            .iter()
            .flat_map(|b| b.runs.iter())
            .filter(|r| self.filter.matches(r))
            .collect()
    }

    pub fn scopes(&self) -> Vec<ScopeItem> {
        let mut out = Vec::new();
        if let Some(b) = &self.status.backend {
            for s in &b.scopes {
                let head = b.snapshots.iter().find(|x| {
                    x.repository == s.repository
                        && x.workspace == s.workspace
                        && x.scope == s.scope
                        && x.generation == s.head_generation
                });
                out.push(ScopeItem {
                    origin: format!("{}/{}", s.repository, s.workspace),
                    scope: s.scope.clone(),
                    generation: s.head_generation,
                    snapshots: Some(s.snapshots),
                    stored_bytes: s.stored_bytes,
                    detail: match head {
                        Some(h) => snapshot_detail(h, &b.snapshots),
                        None => vec![format!(
                            "head generation {} of {} is not among the {} most recent snapshots",
                            s.head_generation,
                            s.scope,
                            b.snapshots.len()
                        )],
                    },
                });
            }
        }
        if let Some(l) = &self.status.local {
            for s in &l.scopes {
                out.push(ScopeItem {
                    origin: "local".into(),
                    scope: s.scope.clone(),
                    generation: s.generation,
                    snapshots: None,
                    stored_bytes: s.stored_bytes,
                    detail: local_detail(s),
                });
            }
        }
        out
    }

    /// Detail lines for the selected item, if it has a snapshot.
    pub fn detail_lines(&self) -> Vec<String> {
        match self.focus {
            Pane::Scopes => self
                .scopes()
                .get(self.scope_sel)
                .map(|s| s.detail.clone())
                .unwrap_or_else(|| vec!["no scope selected".into()]),
            Pane::Runs => {
                let runs = self.visible_runs();
                let Some(r) = runs.get(self.run_sel) else {
                    return vec!["no run selected".into()];
                };
                let mut lines = vec![
                    format!("decision     {} ({} on {})", r.decision, r.reason, r.route),
                    format!("run          {} in {}", r.run_id, r.repository),
                ];
                if !r.detail.is_empty() {
                    lines.push(format!("detail       {}", r.detail));
                }
                let snaps = self.status.backend.as_ref().map(|b| b.snapshots.as_slice());
                match (&r.snapshot, snaps) {
                    (Some(key), Some(all)) => {
                        if let Some(s) = all.iter().find(|s| &s.manifest == key) {
                            lines.push(String::new());
                            lines.extend(snapshot_detail(s, all));
                        }
                    }
                    _ => lines.push("no snapshot for this decision".into()),
                }
                lines
            }
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(input) = &mut self.input {
            match key.code {
                KeyCode::Enter => {
                    self.filter = Filter::parse(input);
                    self.input = None;
                    self.run_sel = 0;
                    self.clamp();
                }
                KeyCode::Esc => self.input = None,
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Char(c) => input.push(c),
                _ => {}
            }
            return Action::None;
        }
        if self.detail || self.storage {
            match key.code {
                KeyCode::Char('q') => return Action::Quit,
                KeyCode::Char('r') => return Action::Refresh,
                _ => {
                    self.detail = false;
                    self.storage = false;
                }
            }
            return Action::None;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('r') => return Action::Refresh,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Pane::Runs => Pane::Scopes,
                    Pane::Scopes => Pane::Runs,
                }
            }
            KeyCode::Down | KeyCode::Char('j') => match self.focus {
                Pane::Runs => self.run_sel += 1,
                Pane::Scopes => self.scope_sel += 1,
            },
            KeyCode::Up | KeyCode::Char('k') => match self.focus {
                Pane::Runs => self.run_sel = self.run_sel.saturating_sub(1),
                Pane::Scopes => self.scope_sel = self.scope_sel.saturating_sub(1),
            },
            KeyCode::Enter => self.detail = true,
            KeyCode::Char('/') | KeyCode::Char('f') => {
                self.input = Some(self.filter.describe());
            }
            KeyCode::Char('c') => {
                self.filter = Filter::default();
            }
            KeyCode::Char('s') => self.storage = true,
            _ => {}
        }
        self.clamp();
        Action::None
    }
}

/// Producer claims, size, object count and previous head of a snapshot.
pub fn snapshot_detail(s: &AdminSnapshot, all: &[AdminSnapshot]) -> Vec<String> {
    let prev = all.iter().find(|p| {
        p.repository == s.repository
            && p.workspace == s.workspace
            && p.scope == s.scope
            && p.generation + 1 == s.generation
    });
    vec![
        format!("snapshot     {}", s.manifest),
        format!("scope        {} (generation {})", s.scope, s.generation),
        format!("workspace    {}/{}", s.repository, s.workspace),
        format!("created      {} UTC", utc(s.created_at)),
        format!(
            "size         {} in {} entries, {} stored",
            human_bytes(s.total_bytes),
            s.entries,
            human_bytes(s.stored_bytes)
        ),
        format!(
            "previous     {}",
            match (prev, s.generation) {
                (_, 0 | 1) => "none (first snapshot of the scope)".to_string(),
                (Some(p), _) => format!("{} (generation {})", p.manifest, p.generation),
                (None, g) => format!("generation {} (not among recent snapshots)", g - 1),
            }
        ),
        "producer (verified OIDC claims)".to_string(),
        format!("  trust      {}", s.class),
        format!("  event      {} on {}", s.event, s.git_ref),
        format!("  workflow   {}", s.workflow_ref),
        format!("  job        {}", s.job_workflow_ref),
        format!("  sha        {}", s.sha),
        format!("  actor      {}", s.actor),
        format!("  run        {} ({})", s.run_id, s.runner_environment),
    ]
}

pub fn local_detail(s: &LocalScope) -> Vec<String> {
    let mut v = vec![
        format!("snapshot     {}", s.snapshot),
        format!(
            "scope        {} (generation {}, local store)",
            s.scope, s.generation
        ),
        format!("created      {} UTC", utc(s.created_at)),
        format!(
            "size         {} in {} files, {} stored in {} packs",
            human_bytes(s.bytes),
            s.files,
            human_bytes(s.stored_bytes),
            s.packs
        ),
        format!("parent       {}", s.parent.as_deref().unwrap_or("none")),
        format!("roots        {}", s.roots.join(", ")),
    ];
    if let Some(e) = &s.error {
        v.push(format!("problem      {e}"));
    }
    v
}

fn title(text: String, focused: bool, color: bool) -> Block<'static> {
    let style = if focused && color {
        Style::default()
            .add_modifier(Modifier::BOLD)
            .fg(Color::Cyan)
    } else if focused {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(text)
}

fn health_lines(s: &Status) -> Vec<String> {
    let mut v = Vec::new();
    match &s.deployment {
        None => v.push("not deployed (run `stateful-ci deploy`)".into()),
        Some(d) => {
            v.push(format!(
                "account  {}",
                d.account_id.as_deref().unwrap_or("-")
            ));
            v.push(format!(
                "worker   {} {}",
                d.worker_name.as_deref().unwrap_or("-"),
                d.worker_version.as_deref().unwrap_or("")
            ));
        }
    }
    match &s.backend {
        None => v.push("no backend URL".into()),
        Some(b) => {
            v.push(format!("backend  {}", b.url));
            match (&b.health, &b.health_error) {
                (Some(h), _) => {
                    v.push(format!(
                        "health   ok, protocol {}, Worker {}",
                        h.protocol, h.worker_version
                    ));
                    v.push(format!("migrate  {}", h.migrations.join(", ")));
                }
                (None, Some(e)) => v.push(format!("health   DOWN: {e}")),
                _ => {}
            }
            if let Some(e) = &b.admin_error {
                v.push(format!("admin    {e}"));
            }
        }
    }
    v.push(format!("binary   {}", s.binary_version));
    if s.drift.is_empty() {
        v.push("drift    none".into());
    } else {
        for d in &s.drift {
            v.push(format!("drift    {d}"));
        }
    }
    v
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Render the whole screen from the state.
pub fn draw(f: &mut Frame, app: &App) {
    let s = &app.status;
    let [header, top, runs_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(10),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(format!(
            "stateful-ci {} dashboard   refreshed {} UTC",
            s.binary_version,
            utc(s.gathered_at)
        ))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        header,
    );
    let [health_area, scopes_area] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(top);
    f.render_widget(
        Paragraph::new(
            health_lines(s)
                .into_iter()
                .map(Line::from)
                .collect::<Vec<_>>(),
        )
        .wrap(Wrap { trim: false })
        .block(title(" Deployment health ".into(), false, app.color)),
        health_area,
    );

    let scopes = app.scopes();
    let scope_rows: Vec<Row> = scopes
        .iter()
        .map(|x| {
            Row::new(vec![
                Cell::from(x.origin.clone()),
                Cell::from(x.scope.clone()),
                Cell::from(x.generation.to_string()),
                Cell::from(x.snapshots.map_or("-".into(), |n| n.to_string())),
                Cell::from(human_bytes(x.stored_bytes)),
            ])
        })
        .collect();
    let mut scope_state = TableState::default();
    if app.focus == Pane::Scopes && !scopes.is_empty() {
        scope_state.select(Some(app.scope_sel));
    }
    f.render_stateful_widget(
        Table::new(
            scope_rows,
            [
                Constraint::Fill(2),
                Constraint::Fill(3),
                Constraint::Length(4),
                Constraint::Length(5),
                Constraint::Length(10),
            ],
        )
        .header(
            Row::new(["WHERE", "SCOPE", "GEN", "SNAPS", "STORED"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .block(title(
            format!(" Scopes ({}) ", scopes.len()),
            app.focus == Pane::Scopes,
            app.color,
        )),
        scopes_area,
        &mut scope_state,
    );

    let runs = app.visible_runs();
    let total = s.backend.as_ref().map_or(0, |b| b.runs.len());
    let run_rows: Vec<Row> = runs
        .iter()
        .map(|r| {
            let style = if r.allowed || !app.color {
                Style::default()
            } else {
                Style::default().fg(Color::Red)
            };
            Row::new(vec![
                Cell::from(utc(r.at)[5..16].to_string()),
                Cell::from(r.repository.clone()),
                Cell::from(r.git_ref.clone().unwrap_or_else(|| "-".into())),
                Cell::from(r.event.clone().unwrap_or_else(|| "-".into())),
                Cell::from(r.class.clone()),
                Cell::from(r.decision_cell()),
                Cell::from(r.snapshot.as_deref().map_or("-".into(), short_snapshot)),
                Cell::from(r.entries.map_or("-".into(), |v| v.to_string())),
                Cell::from(r.bytes.map_or("-".into(), human_bytes)),
            ])
            .style(style)
        })
        .collect();
    let mut run_state = TableState::default();
    if app.focus == Pane::Runs && !runs.is_empty() {
        run_state.select(Some(app.run_sel));
    }
    let filter = if app.filter.is_empty() {
        String::new()
    } else {
        format!(" filter: {} ", app.filter.describe())
    };
    let runs_title = match s.backend.as_ref().and_then(|b| b.admin_error.as_ref()) {
        Some(_) => " Recent runs (admin routes unavailable, see health) ".to_string(),
        None => format!(" Recent runs ({} of {}){filter}", runs.len(), total),
    };
    f.render_stateful_widget(
        Table::new(
            run_rows,
            [
                Constraint::Length(11),
                Constraint::Fill(1),
                Constraint::Fill(2),
                Constraint::Length(19),
                Constraint::Length(10),
                Constraint::Length(25),
                Constraint::Length(12),
                Constraint::Length(7),
                Constraint::Length(9),
            ],
        )
        .header(
            Row::new([
                "TIME",
                "REPOSITORY",
                "REF",
                "EVENT",
                "TRUST",
                "DECISION",
                "SNAPSHOT",
                "ENTRIES",
                "BYTES",
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .block(title(runs_title, app.focus == Pane::Runs, app.color)),
        runs_area,
        &mut run_state,
    );

    let footer_text = match &app.input {
        Some(i) => format!("filter (repo: ref: trust: decision: or words; Enter applies, Esc cancels): {i}_"),
        None => "q quit  r refresh  Tab pane  Up/Down select  Enter detail  / filter  c clear  s storage".into(),
    };
    f.render_widget(Paragraph::new(footer_text), footer);

    if app.detail {
        let lines = app.detail_lines();
        let area = centered(f.area(), 96, lines.len() as u16 + 2);
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).block(title(
                " Snapshot detail (any key closes) ".into(),
                true,
                app.color,
            )),
            area,
        );
    } else if app.storage {
        let lines = storage_lines(s);
        let area = centered(f.area(), 90, lines.len() as u16 + 2);
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).block(title(
                " Storage (any key closes) ".into(),
                true,
                app.color,
            )),
            area,
        );
    }
}

/// Bytes per scope, unique vs referenced.
pub fn storage_lines(s: &Status) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(b) = &s.backend {
        match b.total_object_bytes {
            None => v.push("backend: admin routes unavailable".into()),
            Some(total) => {
                let referenced: u64 = b.scopes.iter().map(|x| x.stored_bytes).sum();
                v.push(format!("backend {}", b.url));
                v.push(format!(
                    "  unique      {} (every stored object once)",
                    human_bytes(total)
                ));
                v.push(format!(
                    "  referenced  {} (summed over scopes)",
                    human_bytes(referenced)
                ));
                for x in &b.scopes {
                    v.push(format!(
                        "  {:>10}  {} {} ({} snapshots)",
                        human_bytes(x.stored_bytes),
                        x.repository,
                        x.scope,
                        x.snapshots
                    ));
                }
            }
        }
    }
    if let Some(l) = &s.local {
        v.push(format!("local store {}", l.path));
        v.push(format!("  unique      {}", human_bytes(l.unique_bytes)));
        v.push(format!(
            "  referenced  {} (by heads)",
            human_bytes(l.referenced_bytes)
        ));
        for x in &l.scopes {
            v.push(format!(
                "  {:>10}  {}",
                human_bytes(x.stored_bytes),
                x.scope
            ));
        }
    }
    if v.is_empty() {
        v.push("no backend and no local store".into());
    }
    v
}

/// Own the terminal: draw, react to keys, refresh every `every` and on `r`.
/// The terminal is restored on every way out. `color`: whether colour is
/// allowed (the caller reads `NO_COLOR`).
pub fn run(
    first: Status,
    mut refresh: impl FnMut() -> Status,
    every: Duration,
    color: bool,
) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let mut app = App::new(first);
    app.color = color;
    let mut last = Instant::now();
    let result = (|| -> io::Result<()> {
        loop {
            terminal.draw(|f| draw(f, &app))?;
            let wait = every.saturating_sub(last.elapsed());
            let mut action = Action::None;
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    action = app.handle_key(k);
                }
            } else {
                action = Action::Refresh;
            }
            match action {
                Action::Quit => return Ok(()),
                Action::Refresh => {
                    app.set_status(refresh());
                    last = Instant::now();
                }
                Action::None => {}
            }
        }
    })();
    ratatui::restore();
    result
}
