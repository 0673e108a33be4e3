//! The stages of a ping as they complete: printed at once (colour and marks on a terminal,
//! plain text otherwise, nothing with `--json`), and collected for the final JSON object.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use serde_json::{Value, json};

/// One finished stage.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub ok: bool,
    /// Time this stage took.
    pub ms: f64,
    pub summary: String,
    /// Further lines (addresses, certificate fields, interfaces...).
    pub details: Vec<String>,
    /// On failure: what it means and the most likely fix, in one sentence.
    pub diagnosis: Option<String>,
}

/// Prints and records stages.
#[derive(Debug)]
pub struct Report {
    mark: Instant,
    json: bool,
    colour: bool,
    pub stages: Vec<Stage>,
}

impl Report {
    pub fn new(json: bool) -> Self {
        Self {
            mark: Instant::now(),
            json,
            colour: !json
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none(),
            stages: Vec::new(),
        }
    }

    /// Prints a line outside any stage (the banner); nothing with `--json`.
    pub fn line(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    /// Restarts the stage clock (after work that belongs to no stage).
    pub fn restart(&mut self) {
        self.mark = Instant::now();
    }

    fn take_ms(&mut self) -> f64 {
        let ms = self.mark.elapsed().as_secs_f64() * 1000.0;
        self.mark = Instant::now();
        ms
    }

    pub fn ok(&mut self, name: &'static str, summary: impl Into<String>, details: Vec<String>) {
        let ms = self.take_ms();
        self.push(Stage {
            name,
            ok: true,
            ms,
            summary: summary.into(),
            details,
            diagnosis: None,
        });
    }

    /// A stage whose duration was measured elsewhere.
    pub fn ok_timed(&mut self, name: &'static str, ms: f64, summary: impl Into<String>) {
        self.mark = Instant::now();
        self.push(Stage {
            name,
            ok: true,
            ms,
            summary: summary.into(),
            details: Vec::new(),
            diagnosis: None,
        });
    }

    pub fn fail(
        &mut self,
        name: &'static str,
        summary: impl Into<String>,
        details: Vec<String>,
        diagnosis: impl Into<String>,
    ) {
        let ms = self.take_ms();
        self.push(Stage {
            name,
            ok: false,
            ms,
            summary: summary.into(),
            details,
            diagnosis: Some(diagnosis.into()),
        });
    }

    fn push(&mut self, stage: Stage) {
        if !self.json {
            let mark = match (stage.ok, self.colour) {
                (true, true) => "\x1b[32m✓ ok  \x1b[0m",
                (false, true) => "\x1b[1;31m✗ FAIL\x1b[0m",
                (true, false) => "ok    ",
                (false, false) => "FAIL  ",
            };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "  {mark}{:<12} {:>8.1} ms  {}",
                stage.name, stage.ms, stage.summary
            );
            for line in &stage.details {
                let _ = writeln!(out, "        {line}");
            }
            if let Some(diagnosis) = &stage.diagnosis {
                if self.colour {
                    let _ = writeln!(out, "        \x1b[1m-> {diagnosis}\x1b[0m");
                } else {
                    let _ = writeln!(out, "        -> {diagnosis}");
                }
            }
            let _ = out.flush();
        }
        self.stages.push(stage);
    }

    /// With `--json`, prints the one object describing the whole run.
    pub fn finish(&self, target: Value, exit_code: i32) {
        if !self.json {
            return;
        }
        let stages: Vec<Value> = self
            .stages
            .iter()
            .map(|s| {
                json!({
                    "stage": s.name,
                    "status": if s.ok { "ok" } else { "fail" },
                    "ms": (s.ms * 1000.0).round() / 1000.0,
                    "summary": s.summary,
                    "details": s.details,
                    "diagnosis": s.diagnosis,
                })
            })
            .collect();
        let failed = self.stages.iter().find(|s| !s.ok);
        let object = json!({
            "target": target,
            "ok": exit_code == 0,
            "exit_code": exit_code,
            "failed_stage": failed.map(|s| s.name),
            "diagnosis": failed.and_then(|s| s.diagnosis.clone()),
            "stages": stages,
        });
        println!("{object}");
    }
}
