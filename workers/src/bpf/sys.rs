//! The raw `bpf(2)` calls this module needs, each with its own `union bpf_attr` member.
//!
//! Every attribute struct below is the prefix of the corresponding member of
//! `union bpf_attr` in `include/uapi/linux/bpf.h`, laid out with `#[repr(C)]` so the
//! `__aligned_u64` fields land where the kernel expects them. The kernel accepts an
//! attribute shorter than its own union: it copies `size` bytes and zero-fills the rest
//! (`bpf_check_uarg_tail_zero` only rejects *longer* attributes with non-zero tails), so
//! passing just the prefix we use is the documented way to talk to older and newer kernels.
//!
//! Functions here return the raw errno on failure; `super` turns it into a [`BpfError`]
//! that names the operation.
//!
//! [`BpfError`]: super::BpfError

use std::ffi::CStr;
use std::mem::size_of;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::insn::RawInsn;

pub(crate) const BPF_MAP_CREATE: u32 = 0;
pub(crate) const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub(crate) const BPF_MAP_DELETE_ELEM: u32 = 3;
pub(crate) const BPF_PROG_LOAD: u32 = 5;
pub(crate) const BPF_PROG_TEST_RUN: u32 = 10;
pub(crate) const BPF_LINK_CREATE: u32 = 28;
pub(crate) const BPF_LINK_UPDATE: u32 = 29;

pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(crate) const BPF_MAP_TYPE_XSKMAP: u32 = 17;
pub(crate) const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type::BPF_XDP`.
pub(crate) const BPF_XDP: u32 = 37;

/// `BPF_OBJ_NAME_LEN`
const OBJ_NAME_LEN: usize = 16;

/// Marker for the attribute structs: plain `#[repr(C)]` data the kernel may read and
/// write in place.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` structs made only of integers and byte arrays, laid
/// out as a prefix of one member of `union bpf_attr`, and every pointer-valued field must
/// point to memory that is valid for the kernel's use for as long as the call runs.
unsafe trait Attr {}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
}
// SAFETY: repr(C) prefix of the BPF_MAP_CREATE member; no pointers.
unsafe impl Attr for MapCreateAttr {}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}
// SAFETY: repr(C) prefix of the BPF_MAP_*_ELEM member; `key`/`value` are set by the
// callers below to locals that outlive the call.
unsafe impl Attr for MapElemAttr {}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
// SAFETY: repr(C) prefix of the BPF_PROG_LOAD member; `insns`, `license` and `log_buf`
// are set by `prog_load` to borrowed slices that outlive the call.
unsafe impl Attr for ProgLoadAttr {}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}
// SAFETY: repr(C) prefix of the BPF_PROG_TEST_RUN member; `data_in` is set by
// `prog_test_run` to a borrowed slice that outlives the call, other pointers are null.
unsafe impl Attr for TestRunAttr {}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}
// SAFETY: repr(C) prefix of the BPF_LINK_CREATE member; no pointers.
unsafe impl Attr for LinkCreateAttr {}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    /// 0: replace whatever program the link holds (no `BPF_F_REPLACE`).
    flags: u32,
    old_prog_fd: u32,
}
// SAFETY: repr(C) prefix of the BPF_LINK_UPDATE member; no pointers.
unsafe impl Attr for LinkUpdateAttr {}

/// `bpf(cmd, attr, sizeof attr)`: the non-negative return value, or the errno.
fn bpf<A: Attr>(cmd: u32, attr: &mut A) -> Result<i64, i32> {
    loop {
        // SAFETY: `attr` is a live, exclusively borrowed `Attr` (repr(C) prefix of
        // `union bpf_attr`, pointers valid for the call per the trait contract); the size
        // passed is exactly its size, so the kernel reads and writes only inside it.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr as *mut A as *mut libc::c_void,
                size_of::<A>() as libc::c_long,
            )
        };
        if ret >= 0 {
            return Ok(ret as i64);
        }
        let errno = last_errno();
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// Wraps a descriptor the kernel just returned.
fn owned_fd(ret: i64) -> Result<OwnedFd, i32> {
    let fd = RawFd::try_from(ret).map_err(|_| libc::EBADF)?;
    // SAFETY: `fd` was just returned by a successful bpf(2) call that creates a new
    // descriptor; nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd, i32> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: obj_name(name),
        ..Default::default()
    };
    owned_fd(bpf(BPF_MAP_CREATE, &mut attr)?)
}

pub(crate) fn map_update_u32(map: RawFd, key: u32, value: u32) -> Result<(), i32> {
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0, // BPF_ANY
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

pub(crate) fn map_delete_u32(map: RawFd, key: u32) -> Result<(), i32> {
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// Loads a program; `log` (if any) receives the verifier's output at `log_level`.
pub(crate) fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[RawInsn],
    license: &CStr,
    name: &str,
    log: Option<(&mut [u8], u32)>,
) -> Result<OwnedFd, i32> {
    let (log_buf, log_size, log_level) = match log {
        Some((buf, level)) => (
            buf.as_mut_ptr() as u64,
            u32::try_from(buf.len()).unwrap_or(u32::MAX),
            level,
        ),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| libc::E2BIG)?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: obj_name(name),
        expected_attach_type,
        ..Default::default()
    };
    // The verifier may return EAGAIN when it is interrupted by a pending signal while
    // holding its state; libbpf retries a few times, and so do we.
    let mut tries = 0;
    loop {
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Err(libc::EAGAIN) if tries < 5 => tries += 1,
            other => return owned_fd(other?),
        }
    }
}

/// One `BPF_PROG_TEST_RUN` of `data` through `prog`: the program's return value.
pub(crate) fn prog_test_run(prog: RawFd, data: &[u8]) -> Result<u32, i32> {
    let mut attr = TestRunAttr {
        prog_fd: prog as u32,
        data_size_in: u32::try_from(data.len()).map_err(|_| libc::E2BIG)?,
        data_in: data.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(attr.retval)
}

pub(crate) fn link_create(
    prog: RawFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> Result<OwnedFd, i32> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    owned_fd(bpf(BPF_LINK_CREATE, &mut attr)?)
}

pub(crate) fn link_update(link: RawFd, prog: RawFd) -> Result<(), i32> {
    let mut attr = LinkUpdateAttr {
        link_fd: link as u32,
        new_prog_fd: prog as u32,
        ..Default::default()
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

pub(crate) fn if_nametoindex(name: &CStr) -> Result<u32, i32> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(last_errno())
    } else {
        Ok(index)
    }
}

/// The name of interface `ifindex` in this thread's network namespace, if any.
pub(crate) fn if_indextoname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the function may write, including the NUL.
    let ret = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ret.is_null() {
        return None;
    }
    // SAFETY: on success the function wrote a NUL-terminated name into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A kernel object name: at most 15 bytes of `[A-Za-z0-9_.]`, NUL-padded.
fn obj_name(name: &str) -> [u8; OBJ_NAME_LEN] {
    let mut out = [0u8; OBJ_NAME_LEN];
    for (o, b) in out
        .iter_mut()
        .zip(
            name.bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
        )
        .take(OBJ_NAME_LEN - 1)
    {
        *o = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_layouts_match_the_uapi() {
        // Offsets from `pahole -C bpf_attr` on vmlinux for the members used here.
        assert_eq!(size_of::<MapCreateAttr>(), 44);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(size_of::<LinkCreateAttr>(), 16);
        assert_eq!(size_of::<LinkUpdateAttr>(), 16);
    }

    #[test]
    fn object_names_are_truncated_and_filtered() {
        assert_eq!(&obj_name("weir-uplink")[..11], b"weiruplink\0");
        assert_eq!(obj_name("a_very_long_program_name")[15], 0);
    }
}
