//! Manual segment membership: the add/remove operation.

use crate::db::write::Ctx;
use crate::error::{InputError, InputReason, Result};
use crate::index::BitmapKey;
use crate::model::Outcome;

use super::MAX_SEGMENT_CHANGE;

/// Adds people to (or with `remove`, removes them from) a manual segment.
pub(crate) fn change_members(
    cx: &mut Ctx<'_, '_>,
    segment: u32,
    people: &[crate::model::Ident],
    remove: bool,
) -> Result<Outcome> {
    let Some(def) = cx.catalog.segments.get(&segment) else {
        return Err(InputError::invalid("segment", format!("#{segment} does not exist")).into());
    };
    if def.data_driven() {
        return Err(InputError::invalid(
            "segment",
            format!(
                "\"{}\" is data-driven: its members follow its condition and cannot be added or removed",
                def.name
            ),
        )
        .into());
    }
    if people.is_empty() {
        return Err(InputError::new("ids", InputReason::Empty).into());
    }
    if people.len() > MAX_SEGMENT_CHANGE {
        return Err(InputError::new(
            "ids",
            InputReason::TooMany {
                count: people.len(),
                max: MAX_SEGMENT_CHANGE,
            },
        )
        .into());
    }
    let key = BitmapKey::Segment(segment);
    let mut changed = 0;
    let mut unknown = 0;
    for ident in people {
        let norm = cx.normalize(ident)?;
        let Some(pid) = cx.lookup(ident.kind, &norm)? else {
            unknown += 1;
            continue;
        };
        let touch = cx.touches.of(pid);
        let now_in = touch
            .segments
            .get(&segment)
            .copied()
            .unwrap_or_else(|| cx.bitmaps.contains(&key, pid));
        if now_in == remove {
            touch.segments.insert(segment, !remove);
            changed += 1;
        }
    }
    Ok(Outcome::Members { changed, unknown })
}
