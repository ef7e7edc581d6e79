//! Every message of the schema round-trips encode → decode, and every validated domain type
//! round-trips through its wire form.

#![allow(clippy::unwrap_used)] // Tests may unwrap.

mod common;

use common::{CountingAlloc, message_body, message_types};
use proptest::prelude::*;
use rustre_proto::frame::DEFAULT_MAX_BODY;
use rustre_proto::types::{
    Attr, Credentials, DirEntry, Fid, FileKind, LayoutRequest, MAX_OST_COUNT, MAX_STRIPE_COUNT, Mode, Name, ObjectId,
    ObjectRef, OstIndex, STRIPE_SIZE_UNIT, StripeCountRequest, StripeLayout, WirePath,
};
use rustre_proto::{Request, pb};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn all_messages() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let n = message_types().len();
    (0..n).prop_flat_map(|i| (Just(i), message_body(message_types()[i].shape)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Well-formed bodies of every message decode, and re-encode to a message that decodes equal.
    #[test]
    fn every_message_round_trips((i, body) in all_messages()) {
        let types = message_types();
        let t = &types[i];
        (t.check)(&body, DEFAULT_MAX_BODY as usize)
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", t.shape.name)))?;
    }
}

fn fid() -> impl Strategy<Value = Fid> {
    (1..u64::MAX, any::<u32>()).prop_map(|(i, g)| Fid::new(i, g).unwrap())
}

fn object_on(ost: u32) -> impl Strategy<Value = ObjectRef> {
    (1..u64::MAX).prop_map(move |id| ObjectRef {
        ost: OstIndex::try_from(ost).unwrap(),
        id: ObjectId::try_from(id).unwrap(),
    })
}

fn layout() -> impl Strategy<Value = StripeLayout> {
    (
        1..=u32::MAX / STRIPE_SIZE_UNIT,
        1..=16_u32,
        prop::option::of(0..MAX_OST_COUNT),
        any::<bool>(),
        0..MAX_OST_COUNT - 16,
    )
        .prop_flat_map(|(units, count, offset, with_objects, first_ost)| {
            let objects: Vec<_> = (0..count).map(|i| object_on(first_ost + i)).collect();
            let objects = if with_objects {
                objects.boxed()
            } else {
                Just(Vec::new()).boxed()
            };
            objects.prop_map(move |objects| {
                StripeLayout::new(
                    units * STRIPE_SIZE_UNIT,
                    count,
                    offset.map(|o| OstIndex::try_from(o).unwrap()),
                    objects,
                )
                .unwrap()
            })
        })
}

fn name() -> impl Strategy<Value = Name> {
    prop::collection::vec(1_u8..=255, 1..=255).prop_filter_map("not a name", |mut b| {
        b.retain(|c| *c != b'/');
        Name::try_from(b).ok()
    })
}

fn attr() -> impl Strategy<Value = Attr> {
    (
        fid(),
        prop_oneof![
            Just(FileKind::Regular),
            Just(FileKind::Directory),
            Just(FileKind::Symlink)
        ],
        0..=0o7777_u32,
        any::<(u32, u32, u32)>(),
        (0..=i64::MAX as u64, any::<u64>()),
        any::<(i64, i64, i64)>(),
        prop::option::of(layout()),
    )
        .prop_map(
            |(fid, kind, mode, (uid, gid, nlink), (size, blocks), (atime_ns, mtime_ns, ctime_ns), layout)| Attr {
                fid,
                kind,
                mode: Mode::try_from(mode).unwrap(),
                uid,
                gid,
                nlink,
                size,
                blocks,
                atime_ns,
                mtime_ns,
                ctime_ns,
                layout: if kind == FileKind::Regular { layout } else { None },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn fids_round_trip(f in fid()) {
        prop_assert_eq!(Fid::try_from(pb::Fid::from(f)), Ok(f));
    }

    #[test]
    fn layouts_round_trip(l in layout()) {
        prop_assert_eq!(StripeLayout::try_from(pb::Layout::from(&l)), Ok(l));
    }

    #[test]
    fn layout_requests_round_trip(
        size in prop::option::of(1..=u32::MAX / STRIPE_SIZE_UNIT),
        count in prop_oneof![Just(StripeCountRequest::Default), Just(StripeCountRequest::All),
            (1..=MAX_STRIPE_COUNT).prop_map(StripeCountRequest::Count)],
        offset in prop::option::of(0..MAX_OST_COUNT),
    ) {
        let r = LayoutRequest {
            stripe_size: size.map(|u| u * STRIPE_SIZE_UNIT),
            stripe_count: count,
            stripe_offset: offset.map(|o| OstIndex::try_from(o).unwrap()),
        };
        prop_assert_eq!(LayoutRequest::try_from(pb::Layout::from(&r)), Ok(r));
    }

    #[test]
    fn attrs_round_trip(a in attr()) {
        prop_assert_eq!(Attr::try_from(pb::Attr::from(&a)), Ok(a));
    }

    #[test]
    fn dir_entries_round_trip(n in name(), f in fid()) {
        let d = DirEntry { name: n, fid: f, kind: FileKind::Regular };
        prop_assert_eq!(DirEntry::try_from(pb::DirEntry::from(&d)), Ok(d));
    }

    #[test]
    fn credentials_round_trip(uid: u32, gid: u32, groups in prop::collection::vec(any::<u32>(), 0..32)) {
        let c = Credentials { uid, gid, groups };
        prop_assert_eq!(Credentials::try_from(pb::Credentials::from(&c)), Ok(c));
    }

    #[test]
    fn paths_print_and_parse_back(parts in prop::collection::vec(name(), 1..8)) {
        let mut s = Vec::new();
        for p in &parts {
            s.push(b'/');
            s.extend_from_slice(p.as_bytes());
        }
        prop_assume!(s.len() <= rustre_proto::types::MAX_PATH_LEN);
        let path = WirePath::parse(&s).unwrap();
        prop_assert_eq!(path.components(), parts.as_slice());
        prop_assert!(path.is_absolute());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Well-formed request bodies with arbitrary values validate or are refused, never panic,
    /// and a refusal names a field or is a version mismatch.
    #[test]
    fn random_requests_validate_or_name_a_field(
        (op, body) in (0..rustre_proto::Opcode::ALL.len()).prop_flat_map(|i| {
            let op = rustre_proto::Opcode::ALL[i];
            let shape = request_shape(op);
            (Just(op), message_body(shape))
        })
    ) {
        let h = rustre_proto::FrameHeader::request(op.as_u16(), 1, 0, body.len() as u32);
        match Request::decode(&h, &body) {
            Ok(r) => prop_assert_eq!(r.opcode(), op),
            Err(e) => prop_assert!(
                e.field().is_some() || matches!(e, rustre_proto::ProtocolError::UnsupportedVersion { .. }),
                "{}", e
            ),
        }
    }
}

fn request_shape(op: rustre_proto::Opcode) -> &'static rustre_proto::limits::Shape {
    use rustre_proto::Opcode as O;
    use rustre_proto::limits::shapes::*;
    match op {
        O::Handshake => &SHAPE_HandshakeRequest,
        O::MdsLookup => &SHAPE_MdsLookupRequest,
        O::MdsCreate => &SHAPE_MdsCreateRequest,
        O::MdsClose => &SHAPE_MdsCloseRequest,
        O::MdsMkdir => &SHAPE_MdsMkdirRequest,
        O::MdsReaddir => &SHAPE_MdsReaddirRequest,
        O::MdsGetattr => &SHAPE_MdsGetattrRequest,
        O::MdsSetattr => &SHAPE_MdsSetattrRequest,
        O::MdsRename => &SHAPE_MdsRenameRequest,
        O::MdsUnlink => &SHAPE_MdsUnlinkRequest,
        O::MdsRmdir => &SHAPE_MdsRmdirRequest,
        O::MdsSymlink => &SHAPE_MdsSymlinkRequest,
        O::MdsLink => &SHAPE_MdsLinkRequest,
        O::MdsStatfs => &SHAPE_MdsStatfsRequest,
        O::MdsSetstripe => &SHAPE_MdsSetstripeRequest,
        O::MdsGetstripe => &SHAPE_MdsGetstripeRequest,
        O::MdsReadlink => &SHAPE_MdsReadlinkRequest,
        O::MdsNull => &SHAPE_MdsNullRequest,
        O::OstPrecreate => &SHAPE_OstPrecreateRequest,
        O::OstWrite => &SHAPE_OstWriteRequest,
        O::OstRead => &SHAPE_OstReadRequest,
        O::OstPunch => &SHAPE_OstPunchRequest,
        O::OstDestroy => &SHAPE_OstDestroyRequest,
        O::OstGetattr => &SHAPE_OstGetattrRequest,
        O::OstStatfs => &SHAPE_OstStatfsRequest,
        O::OstSync => &SHAPE_OstSyncRequest,
        O::OstNull => &SHAPE_OstNullRequest,
    }
}
