//! Pull progress on stderr: per-layer bytes redrawn in place on a terminal
//! (like `ctr pull`), one line per finished layer otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::human_bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Lines,
    Quiet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Downloading,
    Unpacking,
    Exists,
    Done,
    Failed,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Downloading => "downloading",
            Status::Unpacking => "unpacking",
            Status::Exists => "exists",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    fn terminal(self) -> bool {
        matches!(self, Status::Exists | Status::Done | Status::Failed)
    }
}

struct Item {
    label: String,
    total: u64,
    done: u64,
    status: Status,
}

struct State {
    title: String,
    items: Vec<Item>,
    start: Instant,
    drawn: usize,
}

struct Inner {
    mode: Mode,
    state: Mutex<State>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Cheap to clone; all clones update one display.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                mode,
                state: Mutex::new(State {
                    title: String::new(),
                    items: Vec::new(),
                    start: Instant::now(),
                    drawn: 0,
                }),
                stop: AtomicBool::new(false),
                thread: Mutex::new(None),
            }),
        }
    }

    /// Redrawn in place when stderr is a terminal, lines otherwise.
    pub fn stderr() -> Progress {
        Self::new(if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Lines
        })
    }

    pub fn quiet() -> Progress {
        Self::new(Mode::Quiet)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while drawing must not take the pull down with it.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn start(&self, title: &str) {
        {
            let mut s = self.state();
            s.title = title.to_string();
            s.start = Instant::now();
        }
        match self.inner.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{title}"),
            Mode::Tty => {
                let me = self.clone();
                let h = std::thread::spawn(move || {
                    while !me.inner.stop.load(Ordering::Relaxed) {
                        me.draw();
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
                *self.inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
            }
        }
    }

    pub fn item(&self, label: &str, total: u64) -> usize {
        let mut s = self.state();
        s.items.push(Item {
            label: label.to_string(),
            total,
            done: 0,
            status: Status::Waiting,
        });
        s.items.len() - 1
    }

    pub fn advance(&self, i: usize, n: u64) {
        if let Some(it) = self.state().items.get_mut(i) {
            it.done += n;
        }
    }

    pub fn status(&self, i: usize, st: Status) {
        let line = {
            let mut s = self.state();
            let Some(it) = s.items.get_mut(i) else { return };
            if it.status == st {
                return;
            }
            it.status = st;
            if matches!(st, Status::Done | Status::Exists) && it.total > 0 {
                it.done = it.done.max(it.total);
            }
            st.terminal().then(|| line_for(it))
        };
        if let (Mode::Lines, Some(l)) = (self.inner.mode, line) {
            eprintln!("{l}");
        }
    }

    /// Stops the display with a closing line.
    pub fn finish(&self, summary: &str) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        match self.inner.mode {
            Mode::Quiet => {}
            Mode::Tty => {
                self.draw();
                eprintln!("{summary}");
            }
            Mode::Lines => eprintln!("{summary}"),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.state().start.elapsed()
    }

    fn draw(&self) {
        let mut s = self.state();
        let mut out = String::new();
        if s.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", s.drawn));
        }
        let mut lines = vec![s.title.clone()];
        let mut done = 0;
        for it in &s.items {
            lines.push(line_for(it));
            done += it.done;
        }
        let secs = s.start.elapsed().as_secs_f64();
        lines.push(format!(
            "elapsed: {secs:.1} s  total: {}  ({}/s)",
            human_bytes(done),
            human_bytes((done as f64 / secs.max(0.001)) as u64)
        ));
        for l in &lines {
            out.push_str("\x1b[2K");
            out.push_str(l);
            out.push('\n');
        }
        s.drawn = lines.len();
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(out.as_bytes());
        let _ = e.flush();
    }
}

fn line_for(it: &Item) -> String {
    let bar = match (it.done.min(it.total) * 20).checked_div(it.total) {
        Some(filled) => {
            let filled = filled as usize;
            format!("|{}{}|", "+".repeat(filled), "-".repeat(20 - filled))
        }
        None => String::new(),
    };
    format!(
        "{:<30} {:<11} {bar} {} / {}",
        it.label,
        it.status.word(),
        human_bytes(it.done),
        human_bytes(it.total)
    )
}
