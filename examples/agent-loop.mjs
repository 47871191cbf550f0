#!/usr/bin/env node
// agent-loop.mjs — the agent loop on a sandboxfs mount, with node:fs/promises only.
//
//   node examples/agent-loop.mjs [--mount M] [--jobs N] [--timeout S] [--prefix P]
//                                [--auth FILE] [--stop-on-failure] PRD
//
// Pre-warms N sandboxes (mkdir M/P-1 .. M/P-N), then runs the stories of PRD
// (one shell command per line; blank and # lines skipped) across them, one
// story at a time per sandbox. Each story's run number is read back from its
// exec handle (opened read-write), so its output and status are runs/N/...;
// each story is bounded by the sandbox's timeout file. Prints a progress line
// per story and a summary; exits 1 if a story failed, 2 on bad usage or when a
// sandbox could not be made. The sandboxes are removed at the end and on
// Ctrl-C / TERM.
import { open, readFile, writeFile, mkdir, rmdir } from "node:fs/promises";
import { join, basename } from "node:path";

function parseArgs(argv) {
  const a = { mount: process.env.SANDBOXFS_MOUNT || "/sbx", jobs: 2, timeout: 0,
    prefix: `loop-${process.pid}`, auth: null, stop: false, outdir: null, prd: null };
  for (let i = 0; i < argv.length; i++) {
    const v = () => { if (i + 1 >= argv.length) usage(); return argv[++i]; };
    switch (argv[i]) {
      case "--mount": case "-m": a.mount = v(); break;
      case "--jobs": case "-j": a.jobs = Number(v()); break;
      case "--timeout": case "-t": a.timeout = Number(v()); break;
      case "--prefix": case "-p": a.prefix = v(); break;
      case "--auth": a.auth = v(); break;
      case "--outdir": case "-o": a.outdir = v(); break;
      case "--stop-on-failure": a.stop = true; break;
      default:
        if (argv[i].startsWith("-") || a.prd !== null) usage();
        a.prd = argv[i];
    }
  }
  if (a.prd === null || !(a.jobs >= 1) || !(a.timeout >= 0)) usage();
  return a;
}

function usage() {
  console.error("usage: agent-loop.mjs [--mount M] [--jobs N] [--timeout S] [--prefix P] " +
    "[--auth FILE] [--stop-on-failure] [--outdir D] PRD");
  process.exit(2);
}

// Write the command on a read-write exec handle; the read returns "N\n".
async function startRun(sandbox, command) {
  const fh = await open(join(sandbox, "exec"), "r+");
  try {
    await fh.write(command);
    const buf = Buffer.alloc(64);
    const { bytesRead } = await fh.read(buf, 0, buf.length, null);
    return Number.parseInt(buf.subarray(0, bytesRead).toString(), 10);
  } finally {
    await fh.close();
  }
}

// Read to end-of-file. Not readFile: it stops at the size stat reports, and
// the size of a live run's output grows until the run ends.
async function readAll(path) {
  const fh = await open(path, "r");
  try {
    const chunks = [];
    for (;;) {
      const buf = Buffer.alloc(65536);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) return Buffer.concat(chunks);
      chunks.push(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
}

async function runStory(sandbox, k, story, outdir) {
  const t0 = Date.now();
  let run = null, output = "", status;
  try {
    run = await startRun(sandbox, story);
    const dir = join(sandbox, "runs", String(run));
    output = await readAll(join(dir, "output"));       // until the run ends
    status = (await readFile(join(dir, "status"), "utf8")).trim();
  } catch (e) {
    status = `error: ${e.code}`;
  }
  const path = join(outdir, `story-${k}.out`);
  await writeFile(path, output);
  return { k, story, sandbox: basename(sandbox), run, status,
    seconds: (Date.now() - t0) / 1000, output: path };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  // A read of output blocks a libuv pool thread until its run ends: keep
  // threads free for the other sandboxes (set before the pool's first use).
  process.env.UV_THREADPOOL_SIZE ||= String(Math.max(4, 2 * a.jobs + 2));
  let text;
  try {
    text = await readFile(a.prd, "utf8");
  } catch (e) {
    console.error(`agent-loop: cannot read ${a.prd}: ${e.code}`);
    return 2;
  }
  const stories = text.split("\n").map((s) => s.trim()).filter((s) => s && !s.startsWith("#"));
  const outdir = a.outdir || `/tmp/agent-loop.${process.pid}`;
  await mkdir(outdir, { recursive: true });
  const auth = a.auth ? await readFile(a.auth) : null;

  const sandboxes = Array.from({ length: a.jobs }, (_, i) => join(a.mount, `${a.prefix}-${i + 1}`));
  const made = [];
  const teardown = async () => {
    for (const s of made.splice(0)) {
      try { await rmdir(s); } catch (e) { console.error(`agent-loop: rmdir ${s}: ${e.code}`); }
    }
  };
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.once(sig, async () => {
      console.error("agent-loop: interrupted");
      await teardown();                      // rmdir also ends the live runs
      process.exit(130);
    });
  }

  const results = [];
  let failed = false;
  try {
    await Promise.all(sandboxes.map(async (s) => {
      await mkdir(s);                        // the container starts here
      made.push(s);
      await writeFile(join(s, "timeout"), `${a.timeout}\n`);
      if (auth !== null) await writeFile(join(s, "auth"), auth);
    }));
    let next = 0;
    // One worker per sandbox, each taking the next story when it is free.
    await Promise.all(sandboxes.map(async (s) => {
      while (next < stories.length) {
        const k = ++next, story = stories[k - 1];
        if (failed && a.stop) {
          results.push({ k, story, sandbox: "-", run: null, status: "skipped", seconds: 0 });
          continue;
        }
        const r = await runStory(s, k, story, outdir);
        if (r.status !== "exited 0") failed = true;
        results.push(r);
        console.log(`story ${k}: ${r.status} (${r.seconds.toFixed(1)}s, ${r.sandbox} run ${r.run}, ` +
          `output ${r.output})`);
      }
    }));
  } catch (e) {
    console.error(`agent-loop: ${e.path || ""}: ${e.code || e.message}`);
    return 2;
  } finally {
    await teardown();
  }

  results.sort((x, y) => x.k - y.k);
  const ok = results.filter((r) => r.status === "exited 0").length;
  const skipped = results.filter((r) => r.status === "skipped").length;
  const bad = results.length - ok - skipped;
  console.log(`summary: ${results.length} stories, ${ok} passed, ${bad} failed, ${skipped} skipped`);
  console.log(`${"#".padStart(3)}  ${"status".padEnd(12)}  ${"secs".padStart(6)}  ${"sandbox".padEnd(20)}  story`);
  for (const r of results) {
    console.log(`${String(r.k).padStart(3)}  ${r.status.padEnd(12)}  ${r.seconds.toFixed(1).padStart(6)}  ` +
      `${r.sandbox.padEnd(20)}  ${r.story}`);
  }
  return bad ? 1 : 0;
}

process.exitCode = await main();
