//! Process hardening done first thing: no core dumps (a dump would hold
//! plaintext), not ptrace-able by same-uid processes, and as root only the
//! capabilities the job needs.

use caps::{CapSet, Capability};

/// What credloader needs as root: hand files to their owners (CHOWN,
/// FOWNER), reach files whatever their mode (DAC_OVERRIDE), run a health
/// check as the service user (SETUID, SETGID) and stop it on timeout (KILL).
const KEEP: [Capability; 6] = [
    Capability::CAP_CHOWN,
    Capability::CAP_FOWNER,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// Makes the process non-dumpable with a zero core size limit.
pub fn no_core_dumps() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(std::io::Error::from)
}

/// Drops every capability outside [`KEEP`] from the bounding, permitted,
/// effective and inheritable sets. No-op when not running as root.
pub fn drop_capabilities() -> Result<(), caps::errors::CapsError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let keep: caps::CapsHashSet = KEEP.into_iter().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    let have = caps::read(None, CapSet::Permitted)?;
    let keep: caps::CapsHashSet = keep.intersection(&have).copied().collect();
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())?;
    Ok(())
}
