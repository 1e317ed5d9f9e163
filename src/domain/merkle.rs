//! Merkle trees as API.md specifies (RFC 6962 hashing): leaf `H(0x00 || data)`, inner
//! `H(0x01 || left || right)`; a level with an odd count carries its last hash up
//! unchanged; the empty tree's root is `H("")`.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `leaf_hash` of the concatenation of `parts`, without building it.
pub fn leaf_hash_parts(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

pub fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

fn next_level(level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => inner_hash(l, r),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two"),
        })
        .collect()
}

/// Root over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// Which side a sibling is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// Root and every leaf's inclusion path (siblings from leaf to root): O(n log n) for all
/// paths together.
pub fn root_and_paths(leaves: &[Hash]) -> (Hash, Vec<Vec<(Side, Hash)>>) {
    if leaves.is_empty() {
        return (empty_root(), Vec::new());
    }
    let levels = levels(leaves);
    let paths = (0..leaves.len()).map(|i| path_at(&levels, i)).collect();
    (levels_root(&levels), paths)
}

/// Every level of the tree, leaves first and the root last (`2n` hashes in all): any
/// leaf's path can then be read off with [`path_at`] when it is needed, instead of
/// holding `n log n` path entries at once.
pub fn levels(leaves: &[Hash]) -> Vec<Vec<Hash>> {
    if leaves.is_empty() {
        return vec![vec![empty_root()]];
    }
    let mut out = vec![leaves.to_vec()];
    while out.last().map_or(0, Vec::len) > 1 {
        let next = next_level(out.last().expect("at least the leaves"));
        out.push(next);
    }
    out
}

/// The root of a tree built by [`levels`].
pub fn levels_root(levels: &[Vec<Hash>]) -> Hash {
    levels
        .last()
        .and_then(|l| l.first())
        .copied()
        .unwrap_or_else(empty_root)
}

/// Leaf `index`'s inclusion path, siblings from leaf to root, read off [`levels`].
pub fn path_at(levels: &[Vec<Hash>], index: usize) -> Vec<(Side, Hash)> {
    let mut path = Vec::with_capacity(levels.len().saturating_sub(1));
    let mut p = index;
    for level in &levels[..levels.len().saturating_sub(1)] {
        if p.is_multiple_of(2) {
            if p + 1 < level.len() {
                path.push((Side::Right, level[p + 1]));
            }
        } else {
            path.push((Side::Left, level[p - 1]));
        }
        p /= 2;
    }
    path
}

/// Leaves per block of a blocked tree (a power of two). An epoch's proofs are stored in
/// blocks of this many leaves; see [`block_roots`].
pub const BLOCK_LEAVES: usize = 512;

/// The roots of consecutive [`BLOCK_LEAVES`]-leaf blocks of `leaves` (the last one may be
/// shorter). Because blocks are aligned to a power of two, each block root is a node of the
/// whole tree, and the tree over the block roots is the whole tree's top: so a leaf's path
/// is its path inside its block followed by its block's path among the block roots
/// ([`blocked_path`]), and only one block of leaves is needed to prove one leaf.
pub fn block_roots(leaves: &[Hash]) -> Vec<Hash> {
    leaves.chunks(BLOCK_LEAVES).map(root).collect()
}

/// [`block_roots`] read off the whole tree's [`levels`] (the level 9 steps above the
/// leaves), for a tree of at least one leaf.
pub fn block_roots_from_levels(levels: &[Vec<Hash>]) -> Vec<Hash> {
    match levels.get(BLOCK_LEAVES.trailing_zeros() as usize) {
        Some(level) => level.clone(),
        None => vec![levels_root(levels)],
    }
}

/// Leaf `index`'s path in the whole tree, from the leaves of its block (`block`, which
/// starts at `index - index % BLOCK_LEAVES`) and every block's root.
pub fn blocked_path(block: &[Hash], index: usize, roots: &[Hash]) -> Vec<(Side, Hash)> {
    let mut path = path_at(&levels(block), index % BLOCK_LEAVES);
    path.extend(path_at(&levels(roots), index / BLOCK_LEAVES));
    path
}

/// The position of the leaf whose path is `path` in a tree of `n` leaves (the inverse of
/// [`path_at`] on the path's sides); `None` when no leaf of such a tree has that shape.
pub fn position_from_path(n: usize, path: &[(Side, Hash)]) -> Option<usize> {
    // Level sizes from the leaves up.
    let mut sizes = vec![n];
    while *sizes.last()? > 1 {
        let s = *sizes.last()?;
        sizes.push(s.div_ceil(2));
    }
    // Down from the root: at each level the node either has two children (a path step,
    // read from the top end of the path) or carries its only child up (no step).
    let mut index = 0usize;
    let mut steps = path.iter().rev();
    for level in (0..sizes.len() - 1).rev() {
        let left = 2 * index;
        index = if left + 1 < sizes[level] {
            match steps.next()?.0 {
                Side::Left => left + 1,
                Side::Right => left,
            }
        } else {
            left
        };
    }
    (steps.next().is_none() && index < n).then_some(index)
}

/// Recomputes a root from a leaf hash and its path.
pub fn root_from_path(leaf: Hash, path: &[(Side, Hash)]) -> Hash {
    path.iter().fold(leaf, |acc, (side, sibling)| match side {
        Side::Left => inner_hash(sibling, &acc),
        Side::Right => inner_hash(&acc, sibling),
    })
}

/// `L:<hex>` / `R:<hex>` as in API.md.
pub fn format_path(path: &[(Side, Hash)]) -> Vec<String> {
    path.iter()
        .map(|(side, h)| {
            let prefix = if *side == Side::Left { "L" } else { "R" };
            format!("{prefix}:{}", hex::encode(h))
        })
        .collect()
}

pub fn parse_path(path: &[String]) -> Result<Vec<(Side, Hash)>, String> {
    path.iter()
        .map(|step| {
            let (side, h) = step
                .split_once(':')
                .ok_or_else(|| format!("path step {step:?} lacks L: or R:"))?;
            let side = match side {
                "L" => Side::Left,
                "R" => Side::Right,
                _ => return Err(format!("path step {step:?}: side must be L or R")),
            };
            Ok((side, parse_hash(h)?))
        })
        .collect()
}

pub fn parse_hash(h: &str) -> Result<Hash, String> {
    let bytes = hex::decode(h).map_err(|_| format!("{h:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{h:?} is not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn small_trees_by_hand() {
        assert_eq!(root(&[]), empty_root());
        let l = leaves(3);
        assert_eq!(root(&l[..1]), l[0]);
        assert_eq!(root(&l[..2]), inner_hash(&l[0], &l[1]));
        // Odd count: the last hash is carried up unchanged.
        assert_eq!(root(&l), inner_hash(&inner_hash(&l[0], &l[1]), &l[2]));
    }

    #[test]
    fn paths_name_each_sibling_and_skip_a_promoted_odd_node() {
        let l = leaves(3);
        let (_, paths) = root_and_paths(&l);
        assert_eq!(paths[0], vec![(Side::Right, l[1]), (Side::Right, l[2])]);
        assert_eq!(paths[1], vec![(Side::Left, l[0]), (Side::Right, l[2])]);
        assert_eq!(paths[2], vec![(Side::Left, inner_hash(&l[0], &l[1]))]);
        assert_eq!(root_and_paths(&l[..1]).1, vec![Vec::new()]);
    }

    #[test]
    fn a_leaf_of_parts_equals_the_leaf_of_their_concatenation() {
        assert_eq!(leaf_hash_parts(&[b"ab", b"", b"cde"]), leaf_hash(b"abcde"));
    }

    #[test]
    fn a_changed_leaf_changes_the_root() {
        let mut l = leaves(5);
        let before = root(&l);
        l[3] = leaf_hash(b"other");
        assert_ne!(root(&l), before);
    }

    proptest! {
        #[test]
        fn every_path_leads_to_the_root(n in 1usize..70) {
            let l = leaves(n);
            let (r, paths) = root_and_paths(&l);
            prop_assert_eq!(r, root(&l));
            for (leaf, path) in l.iter().zip(&paths) {
                prop_assert_eq!(root_from_path(*leaf, path), r);
                let text = format_path(path);
                prop_assert_eq!(&parse_path(&text).unwrap(), path);
            }
        }

        #[test]
        fn the_levels_end_in_the_root_that_root_computes(n in 0usize..70) {
            let l = leaves(n);
            prop_assert_eq!(levels_root(&levels(&l)), root(&l));
            prop_assert_eq!(root_and_paths(&l).0, root(&l));
        }

        #[test]
        fn a_blocked_path_is_the_whole_trees_path(n in 1usize..3000, i in 0usize..3000) {
            let i = i % n;
            let l = leaves(n);
            let roots = block_roots(&l);
            prop_assert_eq!(root(&roots), root(&l));
            prop_assert_eq!(&block_roots_from_levels(&levels(&l)), &roots);
            let start = i - i % BLOCK_LEAVES;
            let block = &l[start..(start + BLOCK_LEAVES).min(n)];
            prop_assert_eq!(blocked_path(block, i, &roots), path_at(&levels(&l), i));
        }

        #[test]
        fn a_position_is_read_back_from_its_path(n in 1usize..1200, i in 0usize..1200) {
            let i = i % n;
            let l = leaves(n);
            let path = path_at(&levels(&l), i);
            prop_assert_eq!(position_from_path(n, &path), Some(i));
        }

        #[test]
        fn a_path_does_not_prove_another_leaf(n in 2usize..40, i in 0usize..40, j in 0usize..40) {
            let (i, j) = (i % n, j % n);
            prop_assume!(i != j);
            let l = leaves(n);
            let (r, paths) = root_and_paths(&l);
            prop_assert_ne!(root_from_path(l[j], &paths[i]), r);
        }
    }
}
