//! Plain-text rendering of a [`Status`] (what `stateful-ci status` prints
//! and what bare `stateful-ci` prints without a terminal).

use std::fmt::Write;

use crate::model::*;

/// `2026-11-27 22:05:09` (UTC) from Unix seconds.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `manifests/0123abcd...` shortened to `0123abcd4567`.
pub fn short_snapshot(key: &str) -> String {
    let hex = key.rsplit('/').next().unwrap_or(key);
    hex.chars().take(12).collect()
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<width$}  ", width = w[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The columns of a run row, shared by the text report and the TUI.
pub const RUN_COLUMNS: [&str; 11] = [
    "TIME (UTC)",
    "REPOSITORY",
    "REF",
    "EVENT",
    "TRUST",
    "DECISION",
    "SCOPE",
    "SNAPSHOT",
    "ENTRIES",
    "BYTES",
    "STORED",
];

pub fn run_cells(r: &RunRow) -> Vec<String> {
    vec![
        utc(r.at),
        r.repository.clone(),
        opt(&r.git_ref).to_string(),
        opt(&r.event).to_string(),
        r.class.clone(),
        r.decision_cell(),
        if r.scope.is_empty() {
            "-".into()
        } else {
            r.scope.clone()
        },
        r.snapshot.as_deref().map_or("-".into(), short_snapshot),
        r.entries.map_or("-".into(), |v| v.to_string()),
        r.bytes.map_or("-".into(), human_bytes),
        r.stored_bytes.map_or("-".into(), human_bytes),
    ]
}

/// The whole report.
pub fn render(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "stateful-ci {}", s.binary_version);

    let c = &s.config;
    let _ = writeln!(
        o,
        "\nConfig ({})",
        c.source.as_deref().unwrap_or("no stateful-ci.toml")
    );
    if let Some(e) = &c.error {
        let _ = writeln!(o, "  problem    {e}");
    }
    let _ = writeln!(o, "  preset     {}", opt(&c.preset));
    let _ = writeln!(o, "  paths      {}", list(&c.paths));
    let _ = writeln!(o, "  exclude    {}", list(&c.exclude));
    let _ = writeln!(o, "  workspace  {}", c.workspace);

    let _ = writeln!(o, "\nDeployment");
    match &s.deployment {
        None => {
            let _ = writeln!(
                o,
                "  not deployed (no [deployment] in stateful-ci.toml; run `stateful-ci deploy`)"
            );
        }
        Some(d) => {
            let _ = writeln!(o, "  account    {}", opt(&d.account_id));
            let _ = writeln!(o, "  worker     {}", opt(&d.worker_name));
            let _ = writeln!(o, "  url        {}", opt(&d.worker_url));
            let _ = writeln!(o, "  version    {}", opt(&d.worker_version));
            let _ = writeln!(o, "  migrations {}", list(&d.migrations));
        }
    }
    let _ = writeln!(
        o,
        "  drift      {}",
        if s.drift.is_empty() { "none" } else { "" }
    );
    for d in &s.drift {
        let _ = writeln!(o, "    - {d}");
    }

    match &s.backend {
        Some(b) => render_backend(&mut o, b),
        None => {
            let _ = writeln!(
                o,
                "\nBackend\n  none known: pass --backend URL or set STATEFUL_CI_BACKEND_URL (`stateful-ci deploy` records one)"
            );
        }
    }
    if let Some(l) = &s.local {
        render_local(&mut o, l);
    }
    o
}

fn render_backend(o: &mut String, b: &BackendView) {
    let _ = writeln!(o, "\nBackend {}", b.url);
    match (&b.health, &b.health_error) {
        (Some(h), _) => {
            let _ = writeln!(
                o,
                "  health     ok: protocol {}, Worker {}, migrations {}",
                h.protocol,
                h.worker_version,
                list(&h.migrations)
            );
            let _ = writeln!(o, "  issuer     {}", h.oidc_issuer);
        }
        (None, Some(e)) => {
            let _ = writeln!(o, "  health     unreachable: {e}");
        }
        (None, None) => {}
    }
    if let Some(e) = &b.admin_error {
        let _ = writeln!(o, "  runs       not shown: {e}");
        return;
    }
    let _ = writeln!(o, "\nRecent runs ({})", b.runs.len());
    if b.runs.is_empty() {
        let _ = writeln!(o, "  none yet");
    } else {
        let rows: Vec<Vec<String>> = b.runs.iter().map(run_cells).collect();
        o.push_str(&table(&RUN_COLUMNS, &rows));
    }
    let _ = writeln!(o, "\nScopes ({})", b.scopes.len());
    if !b.scopes.is_empty() {
        let rows: Vec<Vec<String>> = b
            .scopes
            .iter()
            .map(|s| {
                vec![
                    s.repository.clone(),
                    s.workspace.clone(),
                    s.scope.clone(),
                    s.head_generation.to_string(),
                    s.snapshots.to_string(),
                    human_bytes(s.stored_bytes),
                ]
            })
            .collect();
        o.push_str(&table(
            &[
                "REPOSITORY",
                "WORKSPACE",
                "SCOPE",
                "GENERATION",
                "SNAPSHOTS",
                "STORED",
            ],
            &rows,
        ));
    }
    render_storage(o, b);
}

/// Storage: bytes per scope, unique (each object once) vs referenced
/// (summed over scopes, so shared objects count once per scope).
fn render_storage(o: &mut String, b: &BackendView) {
    let Some(total) = b.total_object_bytes else {
        return;
    };
    let referenced: u64 = b.scopes.iter().map(|s| s.stored_bytes).sum();
    let _ = writeln!(o, "\nStorage");
    let _ = writeln!(
        o,
        "  unique     {} (every stored object once)",
        human_bytes(total)
    );
    let _ = writeln!(
        o,
        "  referenced {} (summed over scopes; shared objects count per scope)",
        human_bytes(referenced)
    );
}

fn render_local(o: &mut String, l: &LocalView) {
    let _ = writeln!(o, "\nLocal store {}", l.path);
    if let Some(e) = &l.error {
        let _ = writeln!(o, "  problem    {e}");
        return;
    }
    if l.scopes.is_empty() {
        let _ = writeln!(o, "  no snapshots yet");
    } else {
        let rows: Vec<Vec<String>> = l
            .scopes
            .iter()
            .map(|s| {
                vec![
                    s.scope.clone(),
                    s.generation.to_string(),
                    short_snapshot(&s.snapshot),
                    if s.created_at > 0 {
                        utc(s.created_at)
                    } else {
                        "-".into()
                    },
                    s.files.to_string(),
                    human_bytes(s.bytes),
                    human_bytes(s.stored_bytes),
                    s.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        o.push_str(&table(
            &[
                "SCOPE",
                "GENERATION",
                "SNAPSHOT",
                "CREATED (UTC)",
                "FILES",
                "BYTES",
                "STORED",
                "",
            ],
            &rows,
        ));
    }
    let _ = writeln!(
        o,
        "  unique {} stored, {} referenced by heads",
        human_bytes(l.unique_bytes),
        human_bytes(l.referenced_bytes)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40");
    }

    #[test]
    fn sizes_and_ids() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(
            short_snapshot(&format!("manifests/{}", "ab".repeat(32))),
            "abababababab"
        );
    }
}
