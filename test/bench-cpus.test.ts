// bench/cpus.js, the benchmark's CPU placement, on real processes: the lists it reads and writes, and
// that taskset really moves the memory node's process and the suite's own threads and children.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

interface Placement {
  pinned: boolean;
  node?: string;
  application?: string;
  reason?: string;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const cpus = require('../bench/cpus.js') as {
  parseCpuList(text: string): number[];
  allowedCpus(): number[];
  cpuPlacement(mode: string): Placement;
  onCpus(cpus: string | null, command: string, argv: string[]): [string, string[]];
  describePlacement(placement: Placement | undefined): string;
};

const PRINT_ALLOWED = "console.log(/^Cpus_allowed_list:\\s*(\\S+)$/m.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1])";
const several = cpus.allowedCpus().length >= 2;

describe('bench CPU placement', () => {
  it('reads the kernel’s CPU lists and refuses what is not one', () => {
    expect(cpus.parseCpuList('0')).toEqual([0]);
    expect(cpus.parseCpuList('0-2,5,7-8\n')).toEqual([0, 1, 2, 5, 7, 8]);
    expect(() => cpus.parseCpuList('0-x')).toThrow(/cannot read the CPU list '0-x'/);
    expect(cpus.allowedCpus().length).toBeGreaterThan(0);
  });

  it('off pins nothing and says so; a mode it does not know is refused', () => {
    expect(cpus.cpuPlacement('off')).toEqual({ pinned: false, reason: '--pin off' });
    expect(cpus.describePlacement(cpus.cpuPlacement('off'))).toBe('not pinned: --pin off');
    expect(cpus.describePlacement(undefined)).toMatch(/^not recorded/);
    expect(() => cpus.cpuPlacement('sometimes')).toThrow(/--pin: 'sometimes' is neither auto nor off/);
  });

  it.skipIf(!several)('auto gives the memory node the last allowed CPU and the applications the rest', () => {
    const allowed = cpus.allowedCpus();
    const placement = cpus.cpuPlacement('auto');
    expect(placement).toEqual({ pinned: true, node: String(allowed[allowed.length - 1]), application: allowed.slice(0, -1).join(',') });
  });

  it.skipIf(!several)('a process started through onCpus runs only on those CPUs', () => {
    const { node } = cpus.cpuPlacement('auto');
    const [command, argv] = cpus.onCpus(node!, process.execPath, ['-e', PRINT_ALLOWED]);
    expect(command).toBe('taskset');
    const r = spawnSync(command, argv, { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(cpus.parseCpuList(r.stdout)).toEqual([Number(node)]);
    expect(cpus.onCpus(null, process.execPath, ['-e', '1'])).toEqual([process.execPath, ['-e', '1']]);
  });

  it.skipIf(!several)('pinSelf moves a process, and the children it starts afterwards inherit its CPUs', () => {
    const { application } = cpus.cpuPlacement('auto');
    const script = [
      `const { pinSelf } = require(${JSON.stringify(require.resolve('../bench/cpus.js'))});`,
      `pinSelf(${JSON.stringify(application)});`,
      `const child = require('child_process').spawnSync(process.execPath, ['-e', ${JSON.stringify(PRINT_ALLOWED)}], { encoding: 'utf8' });`,
      'process.stdout.write(child.stdout);',
    ].join('\n');
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(cpus.parseCpuList(r.stdout)).toEqual(cpus.parseCpuList(application!));
  });
});
