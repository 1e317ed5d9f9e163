//! The signature verifier: heartbeat signatures that wait together are checked together.
//!
//! Handlers send a check over a bounded channel and wait, like they do for the writer.
//! One thread takes the first check, drains every other already waiting (up to
//! [`MAX_BATCH`]), verifies them with one batch equation ([`verify_signatures`]; on a
//! failed batch each is checked alone, so only the forged ones are refused) and answers
//! each caller. Under load a batch costs about 0.6 times as much per signature as
//! checking one at a time; when idle a batch has one member and is an ordinary
//! `verify_strict`. A full channel never refuses anything: the caller then verifies on its
//! own task, as before batching.

use tokio::sync::{mpsc, oneshot};

use crate::crypto::signatures::{verify_signatures, SignatureCheck};

/// Most signatures in one batch. On this kind of machine (benches/hot_paths.rs) a batch
/// costs about 33 us per signature from 8 members on, against 58 us one at a time, and 32
/// take about 1.1 ms: larger batches would add latency for no gain.
pub const MAX_BATCH: usize = 32;

/// Checks that may wait for the verifier before callers verify on their own.
pub const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

struct Job {
    public_key: [u8; 32],
    message: Box<[u8]>,
    signature: [u8; 64],
    reply: oneshot::Sender<bool>,
}

impl Job {
    fn check(&self) -> SignatureCheck<'_> {
        SignatureCheck {
            public_key: &self.public_key,
            message: &self.message,
            signature: &self.signature,
        }
    }
}

/// Handle for sending signatures to the verifier thread. Cheap to clone; the thread ends
/// when every handle is dropped.
#[derive(Clone)]
pub struct Verifier {
    sender: mpsc::Sender<Job>,
}

impl Verifier {
    pub fn start() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("sig-verifier".into())
            .spawn(move || run(receiver))
            .expect("spawning the signature verifier thread");
        Self { sender }
    }

    /// Whether `signature` is a valid Ed25519 signature by `public_key` over `message`
    /// (as [`crate::crypto::signatures::verify_signature_bytes`] decides; see [`verify_signatures`]
    /// for the one nuance of a batch).
    pub async fn verify(&self, public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            public_key: *public_key,
            message: message.into(),
            signature,
            reply,
        };
        match self.sender.try_send(job) {
            Ok(()) => match answer.await {
                Ok(verdict) => verdict,
                // The thread is gone (it panicked): decide here.
                Err(_) => SignatureCheck {
                    public_key,
                    message,
                    signature: &signature,
                }
                .verify_one(),
            },
            Err(e) => {
                let job = match e {
                    mpsc::error::TrySendError::Full(job)
                    | mpsc::error::TrySendError::Closed(job) => job,
                };
                job.check().verify_one()
            }
        }
    }
}

fn run(mut receiver: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let checks: Vec<SignatureCheck<'_>> = jobs.iter().map(Job::check).collect();
        let verdicts = verify_signatures(&checks);
        drop(checks);
        for (job, verdict) in jobs.drain(..).zip(verdicts) {
            let _ = job.reply.send(verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::generate_signing_key;
    use ed25519_dalek::Signer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_get_their_own_verdicts() {
        let verifier = Verifier::start();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let verifier = verifier.clone();
            tasks.push(tokio::spawn(async move {
                let key = generate_signing_key();
                let message = format!("message {i}").into_bytes();
                let mut signature = key.sign(&message).to_bytes();
                let forged = i % 7 == 3;
                if forged {
                    signature[5] ^= 0x10;
                }
                let ok = verifier
                    .verify(&key.verifying_key().to_bytes(), &message, &signature)
                    .await;
                assert_eq!(ok, !forged, "check {i}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!verifier.verify(&[0; 32], b"m", &[0; 63]).await);
    }
}
