//! A byte trie used for longest-match and common-prefix searches (added tokens, the RWKV
//! world vocabulary, the Unigram lattice).

/// One trie node: sorted children and an optional value.
#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(u8, u32)>,
    value: Option<u32>,
}

/// A trie over byte strings whose keys map to `u32` values.
#[derive(Debug, Clone)]
pub(crate) struct ByteTrie {
    nodes: Vec<Node>,
    /// Direct children of the root, indexed by byte (0 = none).
    root: Vec<u32>,
}

impl Default for ByteTrie {
    fn default() -> Self {
        ByteTrie { nodes: vec![Node::default()], root: vec![0; 256] }
    }
}

impl ByteTrie {
    /// An empty trie.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// True when no key was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].value.is_none()
    }

    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        if node == 0 {
            let c = self.root[byte as usize];
            return (c != 0).then_some(c);
        }
        let ch = &self.nodes[node as usize].children;
        ch.binary_search_by_key(&byte, |&(b, _)| b).ok().map(|i| ch[i].1)
    }

    /// Inserts `key` with `value`, replacing an earlier value of the same key.
    pub(crate) fn insert(&mut self, key: &[u8], value: u32) {
        let mut node = 0u32;
        for &b in key {
            node = match self.child(node, b) {
                Some(c) => c,
                None => {
                    let new = self.nodes.len() as u32;
                    self.nodes.push(Node::default());
                    if node == 0 {
                        self.root[b as usize] = new;
                    } else {
                        let ch = &mut self.nodes[node as usize].children;
                        let pos = ch.partition_point(|&(x, _)| x < b);
                        ch.insert(pos, (b, new));
                    }
                    new
                }
            };
        }
        self.nodes[node as usize].value = Some(value);
    }

    /// The longest key that is a prefix of `s[start..]`: `(length, value)`.
    pub(crate) fn longest_match(&self, s: &[u8], start: usize) -> Option<(usize, u32)> {
        let mut node = 0u32;
        let mut best = None;
        for (i, &b) in s[start..].iter().enumerate() {
            match self.child(node, b) {
                Some(c) => node = c,
                None => break,
            }
            if let Some(v) = self.nodes[node as usize].value {
                best = Some((i + 1, v));
            }
        }
        best
    }

    /// Calls `f(length, value)` for every key that is a prefix of `s[start..]`, shortest first.
    pub(crate) fn prefixes(&self, s: &[u8], start: usize, mut f: impl FnMut(usize, u32)) {
        let mut node = 0u32;
        for (i, &b) in s[start..].iter().enumerate() {
            match self.child(node, b) {
                Some(c) => node = c,
                None => break,
            }
            if let Some(v) = self.nodes[node as usize].value {
                f(i + 1, v);
            }
        }
    }

    /// True when some key starts with `byte`.
    pub(crate) fn has_first_byte(&self, byte: u8) -> bool {
        self.root[byte as usize] != 0
    }
}
