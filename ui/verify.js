// PoOT proof verification in the browser, with WebCrypto only (SHA-256 and Ed25519),
// exactly as API.md "PoOT" defines it and src/domain/proof.rs + src/domain/merkle.rs
// compute it:
//   proof_hash = H("lucid-proof-v1|{node_id}|{epoch}|{window_start}|{window_end}|
//                   {operational_seconds}|{heartbeat_count}|{heartbeats_root}|
//                   {credits_usdt}|{prev_proof_hash or empty}")
//   leaf = H(0x00 || proof_hash bytes); step "L:x" -> H(0x01 || x || acc),
//   "R:x" -> H(0x01 || acc || x); the result must be epoch_root
//   epoch_signature = Ed25519(proof key, "lucid-epoch-v1|{epoch}|{epoch_root}")
"use strict";

(function () {
  const enc = new TextEncoder();
  const HEX64 = /^[0-9a-f]{64}$/;

  function hexToBytes(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) {
      out[i] = parseInt(hex.substr(i * 2, 2), 16);
    }
    return out;
  }

  function bytesToHex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function b64ToBytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  function concat(...parts) {
    const len = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(len);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function text(v) {
    return v === null || v === undefined ? "" : String(v);
  }

  function isCount(v) {
    return Number.isSafeInteger(v) && v >= 0;
  }

  // The proof's own hash, recomputed from its fields (hex).
  async function proofHash(p) {
    const t = [
      "lucid-proof-v1",
      text(p.node_id),
      text(p.epoch),
      text(p.window_start),
      text(p.window_end),
      text(p.operational_seconds),
      text(p.heartbeat_count),
      text(p.heartbeats_root),
      text(p.credits_usdt),
      text(p.prev_proof_hash),
    ].join("|");
    return bytesToHex(await sha256(enc.encode(t)));
  }

  async function rootFromPath(proofHashHex, path) {
    let acc = await sha256(concat(new Uint8Array([0]), hexToBytes(proofHashHex)));
    for (const step of path) {
      if (typeof step !== "string" || !/^[LR]:[0-9a-f]{64}$/.test(step)) {
        throw new Error("inclusion path: malformed step " + JSON.stringify(step));
      }
      const sibling = hexToBytes(step.slice(2));
      acc = step[0] === "L"
        ? await sha256(concat(new Uint8Array([1]), sibling, acc))
        : await sha256(concat(new Uint8Array([1]), acc, sibling));
    }
    return bytesToHex(acc);
  }

  let keyCache = { b64: null, key: null };
  async function importProofKey(publicKeyB64) {
    if (keyCache.b64 === publicKeyB64) return keyCache.key;
    const raw = b64ToBytes(publicKeyB64);
    if (raw.length !== 32) throw new Error("the proof key is not 32 bytes");
    const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    keyCache = { b64: publicKeyB64, key };
    return key;
  }

  // Checks one proof. `prev` is the node's previous proof (the next older one), or null when
  // there is none. Returns {ok: true, checks: [...]} or {ok: false, failed: "which check
  // and why", checks: [...]}; `checks` names every check that passed, in order.
  async function verifyProof(proof, prev, publicKeyB64) {
    const checks = [];
    const fail = (why) => ({ ok: false, failed: why, checks });
    try {
      if (!proof || typeof proof !== "object") return fail("not a proof object");
      if (!isCount(proof.epoch) || !isCount(proof.operational_seconds) || !isCount(proof.heartbeat_count)) {
        return fail("fields: epoch, operational_seconds and heartbeat_count must be whole numbers");
      }
      for (const f of ["proof_hash", "epoch_root", "heartbeats_root"]) {
        if (typeof proof[f] !== "string" || !HEX64.test(proof[f])) return fail("fields: " + f + " is not 64 lowercase hex digits");
      }
      if (proof.prev_proof_hash !== null && proof.prev_proof_hash !== undefined && !HEX64.test(String(proof.prev_proof_hash))) {
        return fail("fields: prev_proof_hash is not 64 lowercase hex digits");
      }

      // 1. The hash covers the fields.
      const computed = await proofHash(proof);
      if (computed !== proof.proof_hash) {
        return fail("proof hash: the fields do not hash to proof_hash (computed " + computed + ")");
      }
      checks.push("proof hash");

      // 2. The chain: prev_proof_hash is the previous proof's hash.
      if (prev) {
        const prevComputed = await proofHash(prev);
        if (prev.node_id !== proof.node_id) return fail("hash chain: the previous proof is of another node");
        if (!(prev.epoch < proof.epoch)) return fail("hash chain: the previous proof is not of an earlier epoch");
        if (prevComputed !== prev.proof_hash) {
          return fail("hash chain: the previous proof (epoch " + prev.epoch + ") does not hash to its proof_hash");
        }
        if (proof.prev_proof_hash !== prevComputed) {
          return fail("hash chain: prev_proof_hash does not match the proof of epoch " + prev.epoch);
        }
        checks.push("hash chain");
      }

      // 3. The inclusion path leads to the epoch root.
      if (!Array.isArray(proof.inclusion_path)) return fail("inclusion path: missing");
      const root = await rootFromPath(proof.proof_hash, proof.inclusion_path);
      if (root !== proof.epoch_root) {
        return fail("inclusion path: does not lead from the proof to epoch_root");
      }
      checks.push("inclusion path");

      // 4. The epoch root is signed by the appliance's proof key.
      let sig;
      try {
        sig = b64ToBytes(text(proof.epoch_signature));
      } catch (e) {
        return fail("epoch signature: not base64");
      }
      if (sig.length !== 64) return fail("epoch signature: not 64 bytes");
      const key = await importProofKey(publicKeyB64);
      const message = enc.encode("lucid-epoch-v1|" + proof.epoch + "|" + proof.epoch_root);
      const good = await crypto.subtle.verify({ name: "Ed25519" }, key, sig, message);
      if (!good) return fail("epoch signature: does not verify with the proof key from /api/v1/keys");
      checks.push("epoch signature");
      return { ok: true, checks };
    } catch (e) {
      return fail(e && e.message ? e.message : String(e));
    }
  }

  window.LucidVerify = Object.freeze({ verifyProof, proofHash, rootFromPath });
})();
