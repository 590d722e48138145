// Programs an e2e test starts (servers, the headless runner, native QEMU), each in a process
// group of its own, bounded from outside and ended as a whole:
//   - after `limitMs` a watchdog kills the whole group, and every wait then fails with the
//     tail of the program's output;
//   - `stop()` (call it in a `finally`) kills the group and resolves once none of its
//     processes runs;
//   - should the test process end first (a failed assertion, the runner's timeout), every
//     group still running is killed on its way out (exit, SIGTERM, SIGINT, SIGHUP).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';

const TAIL = 4000;
/** Groups started here and not yet stopped, by pgid. */
const live = new Set();
let handlersInstalled = false;

function signalGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal);
  } catch (e) {
    if (e.code !== 'ESRCH') throw e;
  }
}

function killAll() {
  for (const pgid of live) signalGroup(pgid, 'SIGKILL');
}

function installHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAll);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(sig, () => {
      killAll();
      process.exit(128 + constants.signals[sig]);
    });
  }
}

/** Whether a process of group `pgid` still runs (zombies do not count). */
export function groupRunning(pgid) {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true;
  }
  return false;
}

const tail = (s) => (s.length > TAIL ? `[...]${s.slice(-TAIL)}` : s);

/**
 * Starts `cmd args` as the leader of a process group of its own, stdin/stdout/stderr piped
 * (stdin ignored with `stdin: 'ignore'`), killed as a whole after `limitMs`. Returns
 * `{ child, pid, output(), waitFor(text, ms), waitForErr(text, ms), exit, stop() }`:
 * `exit` resolves to `{ code, signal }`; `waitFor` resolves when stdout holds `text` and
 * rejects (with the tail of both outputs) after `ms`, when the program ended without it or
 * when the watchdog fired.
 */
export function startGroup(cmd, args, { name = cmd, limitMs, cwd, env, stdin = 'pipe' } = {}) {
  if (!limitMs) throw new Error('startGroup: limitMs is required');
  installHandlers();
  const child = spawn(cmd, args, { cwd, env, stdio: [stdin, 'pipe', 'pipe'], detached: true });
  const pgid = child.pid;
  if (pgid === undefined) throw new Error(`cannot start ${name}`);
  live.add(pgid);
  let out = '';
  let err = '';
  let fired = false;
  let ended = false;
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => {
    ended = true;
    resolve({ code, signal });
  }));
  const watchdog = setTimeout(() => {
    fired = true;
    console.log(`watchdog: ${name} still ran after ${limitMs} ms; killing its process group`);
    signalGroup(pgid, 'SIGKILL');
  }, limitMs);
  watchdog.unref();
  const failure = (what) => new Error(
    `${name}: ${fired ? `still running after ${limitMs} ms, killed by the watchdog` : what}\n` +
    `--- the last of its stdout ---\n${tail(out)}\n--- the last of its stderr ---\n${tail(err)}\n---`);
  const waitOn = (get) => async (text, ms = 30000) => {
    const deadline = Date.now() + ms;
    while (!get().includes(text)) {
      if (fired) throw failure('');
      if (ended) throw failure(`ended without ${JSON.stringify(text)}`);
      if (Date.now() > deadline) throw failure(`no ${JSON.stringify(text)} within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    child,
    pid: pgid,
    output: () => ({ out, err }),
    waitFor: waitOn(() => out),
    waitForErr: waitOn(() => err),
    exit,
    failure,
    /** Kills the whole group; resolves once none of its processes runs (at most `ms`). */
    async stop(ms = 20000) {
      clearTimeout(watchdog);
      signalGroup(pgid, 'SIGKILL');
      const deadline = Date.now() + ms;
      while (groupRunning(pgid)) {
        if (Date.now() > deadline) throw new Error(`${name}: processes of group ${pgid} still run ${ms} ms after SIGKILL`);
        await new Promise((r) => setTimeout(r, 20));
      }
      live.delete(pgid);
    },
  };
}
