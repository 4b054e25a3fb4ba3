//! The envelope of every cursor-paginated list a service answers.

use serde::Serialize;

/// One page of a list: `{"items": [...], "next_cursor": "..."}`. `next_cursor` is what the
/// client passes back (as `after`) for the next page, and `null` on the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` items read in cursor order: the extra item is not shown,
    /// it only says that another page follows, so the last page never points at an empty one.
    pub fn from_overfetched(
        mut items: Vec<T>,
        limit: usize,
        cursor: impl Fn(&T) -> String,
    ) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor)
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_item_only_says_that_a_next_page_follows() {
        let page = Page::from_overfetched(vec![1, 2, 3], 2, ToString::to_string);
        assert_eq!(page.items, [1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));

        let last = Page::from_overfetched(vec![1, 2], 2, ToString::to_string);
        assert_eq!(last.items, [1, 2]);
        assert_eq!(last.next_cursor, None);
    }
}
