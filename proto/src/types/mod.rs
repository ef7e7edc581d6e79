//! Validated domain types made from the wire types with `TryFrom`.
//!
//! Every conversion checks every field and names the offending one in its
//! [`ProtocolError`](crate::ProtocolError) (`create.layout.stripe_size`). Code past the decoder
//! only sees these types.

mod attr;
mod ids;
mod io;
mod layout;
mod name;

pub use attr::{Attr, Credentials, DirEntry, FileKind, MAX_FILE_SIZE, MAX_GROUPS, Mode, OpenFlags, RenameFlags};
pub use ids::{Fid, MAX_OST_COUNT, ObjectId, ObjectRef, OstIndex, Xid};
pub use io::{BulkDesc, Capability, Extent, MAX_BULK_LEN, MAX_MAC_LEN, PunchRange, Rights};
pub use layout::{
    DEFAULT_STRIPE_SIZE, LayoutRequest, MAX_STRIPE_COUNT, STRIPE_COUNT_ALL, STRIPE_SIZE_UNIT, StripeCountRequest,
    StripeLayout,
};
pub use name::{MAX_NAME_LEN, MAX_PATH_LEN, Name, SymlinkTarget, WirePath};
