//! `vodhook replay`: which stored events a replay selects and which
//! deliveries it queues for them. The binary reads and writes the store;
//! the choices are made here, where tests reach them.

use std::collections::BTreeSet;

use crate::actions::Actions;
use crate::events::Event;
use crate::store::{EventRow, Reader};

/// The stored events named by `ids` and those received since `since_ms`,
/// each once (ids and `--since` may overlap), in id order. Ids with no
/// stored event are left out; the caller names them.
///
/// # Errors
///
/// A query fails.
pub async fn select(
    reader: &Reader,
    ids: &[i64],
    since_ms: Option<i64>,
) -> anyhow::Result<Vec<(EventRow, Vec<u8>)>> {
    let mut events = reader.raw_events(ids, since_ms).await?;
    events.sort_by_key(|(row, _)| row.id);
    events.dedup_by_key(|(row, _)| row.id);
    Ok(events)
}

/// The (event id, action name) pairs to queue for `events` (id and raw
/// body): `only` for every event, whatever its filters, or else the
/// actions each event matches. Each pair once, in event id order, however
/// often an event is given; a body that is not an event is skipped.
pub fn deliveries<'a>(
    actions: &Actions,
    events: impl IntoIterator<Item = (i64, &'a [u8])>,
    only: Option<&str>,
) -> Vec<(i64, String)> {
    let mut pairs = BTreeSet::new();
    for (id, raw) in events {
        let Ok(event) = Event::parse(raw) else {
            continue;
        };
        match only {
            Some(name) => {
                pairs.insert((id, name.to_owned()));
            }
            None => {
                let derived = crate::state::derive(&event);
                pairs.extend(
                    actions
                        .matching(&event, &derived)
                        .into_iter()
                        .map(|name| (id, name)),
                );
            }
        }
    }
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const DELETED: &[u8] = br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["f1"]}}"#;
    const UPLOADED: &[u8] =
        br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"f2","MediaBasicInfo":{}}}"#;

    fn actions() -> Actions {
        let config = Config::parse(
            "[[action]]\nname = \"all\"\non = [\"*\"]\nexec = [\"/bin/true\"]\n\
             [[action]]\nname = \"uploads\"\non = [\"NewFileUpload\"]\nexec = [\"/bin/true\"]\n",
        )
        .unwrap();
        Actions::new(&config.actions)
    }

    #[test]
    fn each_event_and_action_is_paired_once() {
        let events = [(1, DELETED), (2, UPLOADED), (1, DELETED), (3, &b"[1]"[..])];
        assert_eq!(
            deliveries(&actions(), events, None),
            [
                (1, "all".to_owned()),
                (2, "all".to_owned()),
                (2, "uploads".to_owned())
            ]
        );
    }

    #[test]
    fn a_named_action_runs_for_every_event_whatever_its_filters() {
        let events = [(2, UPLOADED), (1, DELETED), (2, UPLOADED)];
        assert_eq!(
            deliveries(&actions(), events, Some("uploads")),
            [(1, "uploads".to_owned()), (2, "uploads".to_owned())]
        );
    }
}
