//! What each io_uring submission is for, packed into its 64-bit `user_data`.
//!
//! `op` (8 bits) | slot index (32 bits) | slot generation (24 bits). The generation guards
//! against a completion for a connection whose slab slot has since been reused.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Accept = 1,
    HeadRecv = 2,
    Recv = 3,
    Send = 4,
    Connect = 5,
    ConnectTimeout = 6,
    Cancel = 7,
    Tick = 8,
    Mailbox = 9,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::HeadRecv,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Connect,
            6 => Op::ConnectTimeout,
            7 => Op::Cancel,
            8 => Op::Tick,
            9 => Op::Mailbox,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub index: u32,
    pub generation: u32,
}

const GENERATION_MASK: u32 = (1 << 24) - 1;

impl Token {
    pub fn new(op: Op, index: usize, generation: u32) -> Token {
        Token { op, index: index as u32, generation: generation & GENERATION_MASK }
    }

    pub fn encode(self) -> u64 {
        (self.op as u64) | ((self.index as u64) << 8) | (((self.generation & GENERATION_MASK) as u64) << 40)
    }

    pub fn decode(v: u64) -> Option<Token> {
        Some(Token {
            op: Op::from_u8(v as u8)?,
            index: (v >> 8) as u32,
            generation: (v >> 40) as u32 & GENERATION_MASK,
        })
    }
}

/// Next generation for a reused slot (wrapping inside 24 bits).
pub fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & GENERATION_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for op in [Op::Accept, Op::Recv, Op::Send, Op::Mailbox] {
            let t = Token::new(op, 0xdead_beef, 0xab_cdef);
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(0), None);
        assert_eq!(next_generation(GENERATION_MASK), 0);
    }
}
