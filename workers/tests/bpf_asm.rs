//! The BPF assembler of `weir_workers::bpf` (no root): labels resolved forwards and
//! backwards, the two-slot map load, ALU/JMP32 encodings, rejected targets, and a
//! property test that every jump lands on its label.

use proptest::prelude::*;
use weir_workers::bpf::insn::{AluOp, JmpOp, Label, RawInsn, Reg, Target, Width};
use weir_workers::bpf::{assemble, AsmError, Insn};

#[test]
fn assembler_resolves_forward_and_backward_labels() {
    let (top, end) = (Label(1), Label(2));
    let prog = assemble(&[
        Insn::mov64_imm(Reg::R0, 0),                           // 0
        Insn::label(top),                                      //
        Insn::add64_imm(Reg::R0, 1),                           // 1
        Insn::jmp_imm(JmpOp::Gt, Width::W64, Reg::R0, 3, end), // 2 -> 4: off 1
        Insn::ja(top),                                         // 3 -> 1: off -3
        Insn::label(end),                                      //
        Insn::exit(),                                          // 4
    ])
    .unwrap();
    assert_eq!(prog.len(), 5);
    assert_eq!(prog[2].off, 1);
    assert_eq!(prog[2].code, 0x25, "BPF_JMP | BPF_JGT | BPF_K");
    assert_eq!(prog[2].imm, 3);
    assert_eq!(prog[3].off, -3);
    assert_eq!(prog[3].code, 0x05, "BPF_JMP | BPF_JA");
}

#[test]
fn assembler_encodes_lddw_map_fd_in_two_slots() {
    let prog = assemble(&[
        Insn::ld_map_fd(Reg::R1, 42),
        Insn::mov64_imm(Reg::R0, 2),
        Insn::exit(),
    ])
    .unwrap();
    assert_eq!(prog.len(), 4);
    assert_eq!(prog[0].code, 0x18, "BPF_LD | BPF_DW | BPF_IMM");
    assert_eq!(prog[0].dst(), 1);
    assert_eq!(prog[0].src(), 1, "BPF_PSEUDO_MAP_FD");
    assert_eq!(prog[0].imm, 42);
    assert_eq!(
        prog[1],
        RawInsn::default(),
        "second slot: upper 32 bits, zero"
    );
    #[cfg(target_endian = "little")]
    assert_eq!(
        prog[0].to_u64().to_le_bytes(),
        [0x18, 0x11, 0, 0, 42, 0, 0, 0]
    );
}

#[test]
fn assembler_encodes_alu_jmp32_and_register_operands() {
    let prog = assemble(&[
        Insn::alu32_imm(AluOp::And, Reg::R8, 0x0f),
        Insn::alu64_reg(AluOp::Add, Reg::R4, Reg::R5),
        Insn::jmp_reg(JmpOp::Gt, Width::W64, Reg::R4, Reg::R3, Target::Offset(0)),
        Insn::jmp_imm(JmpOp::Ne, Width::W32, Reg::R7, -1, Target::Offset(0)),
        Insn::ldx_h(Reg::R5, Reg::R2, 12),
        Insn::exit(),
    ])
    .unwrap();
    assert_eq!(prog[0].code, 0x54);
    assert_eq!(prog[1].code, 0x0f);
    assert_eq!((prog[1].dst(), prog[1].src()), (4, 5));
    assert_eq!(prog[2].code, 0x2d);
    assert_eq!(prog[3].code, 0x56);
    assert_eq!(prog[3].imm, -1);
    assert_eq!(prog[4].code, 0x69);
    assert_eq!(prog[4].off, 12);
}

#[test]
fn assembler_rejects_bad_targets() {
    let l = Label(9);
    assert_eq!(
        assemble(&[Insn::ja(l), Insn::exit()]),
        Err(AsmError::UndefinedLabel { slot: 0, label: l })
    );
    assert_eq!(
        assemble(&[Insn::label(l), Insn::label(l), Insn::exit()]),
        Err(AsmError::DuplicateLabel { label: l })
    );
    // Into the second slot of an lddw.
    assert!(matches!(
        assemble(&[
            Insn::ja(Target::Offset(1)),
            Insn::ld_map_fd(Reg::R1, 3),
            Insn::exit()
        ]),
        Err(AsmError::BadJumpTarget {
            slot: 0,
            target: 2,
            ..
        })
    ));
    // A label placed after the last instruction is past the end.
    assert!(matches!(
        assemble(&[Insn::ja(l), Insn::exit(), Insn::label(l)]),
        Err(AsmError::BadJumpTarget {
            target: 2,
            len: 2,
            ..
        })
    ));
    assert!(matches!(
        assemble(&[Insn::ja(Target::Offset(-2)), Insn::exit()]),
        Err(AsmError::BadJumpTarget { target: -1, .. })
    ));
    assert_eq!(assemble(&[Insn::label(l)]), Err(AsmError::Empty));
    let mut far = vec![Insn::ja(l)];
    far.extend(std::iter::repeat_n(Insn::mov64_imm(Reg::R0, 0), 40_000));
    far.extend([Insn::label(l), Insn::exit()]);
    assert!(matches!(
        assemble(&far),
        Err(AsmError::JumpTooFar {
            slot: 0,
            distance: 40_000
        })
    ));
}

proptest! {
    /// Every jump lands on the slot where its label was placed, whatever mix of one- and
    /// two-slot instructions lies between.
    #[test]
    fn assembler_offsets_land_on_labels(
        kinds in proptest::collection::vec(0u8..3, 1..60),
        targets in proptest::collection::vec(0usize..60, 60),
    ) {
        // Build: each element is a labelled instruction; kind 0 plain, 1 lddw, 2 jump.
        let n = kinds.len();
        let mut insns = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            insns.push(Insn::label(Label(i as u32)));
            insns.push(match kind {
                0 => Insn::mov64_imm(Reg::R0, i as i32),
                1 => Insn::ld_map_fd(Reg::R1, i as i32),
                _ => Insn::ja(Label((targets[i] % n) as u32)),
            });
        }
        let raw = assemble(&insns).unwrap();
        let mut slot_of = Vec::new();
        let mut slot = 0usize;
        for kind in &kinds {
            slot_of.push(slot);
            slot += if *kind == 1 { 2 } else { 1 };
        }
        prop_assert_eq!(raw.len(), slot);
        for (i, kind) in kinds.iter().enumerate() {
            if *kind == 2 {
                let landed = slot_of[i] as i64 + 1 + i64::from(raw[slot_of[i]].off);
                prop_assert_eq!(landed, slot_of[targets[i] % n] as i64);
            }
        }
    }
}
