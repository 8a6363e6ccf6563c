//! Child processes (nats-server, agent processes) that a process exiting without unwinding
//! must still kill: `std::process::exit` runs no destructors, so their kill-on-drop would
//! not fire and they would outlive it.

use std::collections::BTreeSet;
use std::sync::Mutex;

static CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Remembers a child process to kill on an early exit.
pub fn track(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.insert(pid);
    }
}

/// Forgets a child that was stopped.
pub fn untrack(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.remove(&pid);
    }
}

/// Kills (SIGKILL) every tracked child.
pub fn kill_all() {
    if let Ok(children) = CHILDREN.lock() {
        for &pid in children.iter() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
