//! A child's process group, killed when its guard is dropped: what makes a cancelled or
//! timed-out attempt stop everything it started (a compiler's rustc and build scripts, a
//! command's children). The child must have been spawned with `process_group(0)`.

/// Kills a child's whole process group when dropped, unless [`GroupGuard::release`] was
/// called after the child was reaped.
pub(crate) struct GroupGuard(Option<nix::unistd::Pid>);

impl GroupGuard {
    /// The guard of `child`'s group (the child leads it).
    pub(crate) fn of(child: &tokio::process::Child) -> Self {
        Self(child.id().map(|id| nix::unistd::Pid::from_raw(id as i32)))
    }

    /// The child was reaped: nothing to kill (its group id may be reused).
    pub(crate) fn release(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
