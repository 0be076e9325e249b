'use strict';
// Renders a `farmem-bench/1` results file (from `npx farmem bench`) into two SVG charts and a
// generated section of docs/benchmark.md. Charts come from vega-lite, rendered headlessly (no canvas),
// so the figures in the docs are reproducible from the JSON alone.
//
//   node bench/report.js [--results FILE] [--img docs/img] [--doc docs/benchmark.md]
const fs = require('node:fs');
const path = require('node:path');
const { budgetBytes } = require('./apps/workloads');
const { onTarget } = require('./apps/kernel-swap');
const { describePlacement } = require('./cpus');

const ROOT = path.join(__dirname, '..');
const RESULTS_DIR = path.join(ROOT, 'bench', 'results');
const BEGIN = '<!-- apps:begin -->';
const END = '<!-- apps:end -->';
const NORMALIZED_SVG = 'bench-normalized.svg';
const CDF_SVG = 'bench-fault-cdf.svg';
const SWAP_DASH = [6, 4];
const SWAP_COLOR = '#222222';
// Tableau 10 without its grey, which would read like the near-black swap line.
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f'];

function benchError(code, message, cause) {
  const error = new Error(message, cause ? { cause } : undefined);
  error.code = code;
  return error;
}

/** The newest apps-*.json; names sort by time because they are apps-YYYY-MM-DDTHHMM.json. */
function newestResults(dir = RESULTS_DIR) {
  let names = [];
  try {
    names = fs.readdirSync(dir).filter((n) => /^apps-.*\.json$/.test(n));
  } catch {
    // No results directory yet: reported below as "no results".
  }
  names.sort();
  return names.length ? path.join(dir, names[names.length - 1]) : null;
}

function loadResults(resultsFile) {
  const hint = 'Run `npx farmem bench` (or `npx farmem bench --quick`) first.';
  if (!resultsFile) throw benchError('FARMEM_BENCH_NO_RESULTS', `No bench/results/apps-*.json found. ${hint}`);
  let data;
  try {
    data = JSON.parse(fs.readFileSync(resultsFile, 'utf8'));
  } catch (cause) {
    throw benchError('FARMEM_BENCH_NO_RESULTS', `Cannot read benchmark results ${resultsFile}: ${cause.message}. ${hint}`, cause);
  }
  if (!data || data.schema !== 'farmem-bench/1' || !Array.isArray(data.workloads)) {
    throw benchError('FARMEM_BENCH_NO_RESULTS', `${resultsFile} is not a farmem-bench/1 results file. ${hint}`);
  }
  return data;
}

/** vega and vega-lite are ES modules (with top-level await), so import() rather than require(). */
async function loadVega() {
  try {
    const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
    return { vega, vegaLite };
  } catch (cause) {
    throw benchError(
      'FARMEM_BENCH_DEPS_MISSING',
      'Rendering the benchmark report needs vega and vega-lite (dev dependencies). ' +
        'Run `npm ci` in a clone of farmem, or `npm install --no-save vega vega-lite`. ' +
        `(${cause && cause.message})`,
      cause,
    );
  }
}

// Helvetica advance widths (1/1000 em) for ASCII 32..126. Without a canvas, vega estimates every
// character at 0.8 em, which leaves the SVG hundreds of pixels wider than what it shows; vega lets
// a caller replace textMetrics.width (vl-convert does the same), and these widths are close enough.
const HELVETICA = [
  278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556, 556,
  556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
  667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556,
  556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

function textWidth(item, text) {
  const s = String(text ?? '').trim();
  const size = item.fontSize != null ? +item.fontSize || 0 : 11;
  let em = 0;
  for (const ch of s) {
    const code = ch.codePointAt(0);
    em += code >= 32 && code <= 126 ? HELVETICA[code - 32] : 600;
  }
  // Margin for the wider sans-serif fonts viewers substitute (DejaVu, Verdana); bold runs wider still.
  const bold = item.fontWeight === 'bold' || +item.fontWeight >= 600;
  const width = (em / 1000) * size * (bold ? 1.18 : 1.1);
  return item.limit > 0 ? Math.min(width, item.limit) : width;
}

async function toSvg({ vega, vegaLite }, spec) {
  const previous = vega.textMetrics.width;
  vega.textMetrics.width = textWidth;
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
    vega.textMetrics.width = previous;
  }
}

// ---- numbers ----------------------------------------------------------------------------------

function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

/** local.median / run.median: 1.0 is the plain ArrayBuffer; null when the run has no time. */
function normalized(workload, run) {
  if (!run || run.error || !isNum(run.median) || run.median <= 0) return null;
  const local = workload.local && workload.local.median;
  if (isNum(local) && local > 0) return local / run.median;
  return isNum(run.normalized) ? run.normalized : null;
}

function findRun(workload, label, budget) {
  return (workload.runs || []).find((r) => r.label === label && r.budget === budget);
}

/** Best farmem run at a budget: { label, value } or null. */
function bestFarmem(workload, budget) {
  let best = null;
  for (const run of workload.runs || []) {
    if (run.system === 'swap' || run.budget !== budget) continue;
    const value = normalized(workload, run);
    if (value !== null && (!best || value > best.value)) best = { label: run.label, value, run };
  }
  return best;
}

function swapRun(workload, budget) {
  return (workload.runs || []).find((r) => r.system === 'swap' && r.budget === budget) || null;
}

function swapValue(workload, budget) {
  const run = swapRun(workload, budget);
  return run ? normalized(workload, run) : null;
}

/**
 * The bar's "farmem faster than swap": a win by the medians counts as "yes" only when every farmem
 * sample beat every swap sample; where the samples overlap, the host's noise could have decided it.
 */
function fasterThanSwap(farmemRun, swap, fasterByMedian) {
  if (!fasterByMedian) return 'no';
  return slowestSample(farmemRun.seconds) < fastestSample(swap.seconds) ? 'yes' : 'by the medians; the samples overlap';
}

/** The fastest of a cell's timed samples (Infinity when it has none). */
function fastestSample(seconds) {
  return Math.min(...(seconds || []).filter(isNum));
}

/** The slowest of a cell's timed samples (-Infinity when it has none). */
function slowestSample(seconds) {
  return Math.max(...(seconds || []).filter(isNum));
}

/** Every label in order of first appearance, farmem before swap, so legends and rows agree. */
function labelsOf(data) {
  const farmem = [];
  const swap = [];
  for (const w of data.workloads) {
    for (const r of w.runs || []) {
      const list = r.system === 'swap' ? swap : farmem;
      if (!list.includes(r.label)) list.push(r.label);
    }
  }
  return { farmem, swap, all: [...farmem, ...swap] };
}

function budgetsOf(data) {
  if (Array.isArray(data.budgets) && data.budgets.length) return [...data.budgets].sort((a, b) => b - a);
  const set = new Set();
  for (const w of data.workloads) for (const r of w.runs || []) set.add(r.budget);
  return [...set].sort((a, b) => b - a);
}

const pct = (budget) => `${+(budget * 100).toFixed(2)}%`;
// Two decimals as asked, but two significant digits below 0.1: swap reaches ~0.005, which would print as 0.01.
const fmtNorm = (v) => (v === null ? '—' : v >= 0.1 ? v.toFixed(2) : v.toPrecision(2));
const fmtRatio = (v) => (v >= 10 ? v.toFixed(1) : v.toFixed(2));
const fmtSec = (s) => (s >= 100 ? s.toFixed(0) : s.toPrecision(3));
const fmtUs = (us) => (us >= 100 ? us.toFixed(0) : us.toPrecision(3));
const cell = (text) => String(text).replace(/\|/g, '\\|');

function fmtBytes(bytes) {
  if (!isNum(bytes)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${+bytes.toFixed(1)} ${units[i]}`;
}

function quantile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function machineLine(m = {}) {
  const date = typeof m.date === 'string' ? m.date.replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC') : '?';
  const parts = [m.cpu || 'unknown CPU', `${m.cores ?? '?'} cores`];
  if (isNum(m.memoryGiB)) parts.push(`${m.memoryGiB} GiB`);
  parts.push(`Linux ${m.kernel || '?'}`, `Node ${m.node || '?'}`, date);
  return parts.join(', ');
}

// ---- charts -----------------------------------------------------------------------------------

/** One colour per label, kernel swap near-black; one dash per label, kernel swap dashed. */
function labelScales(labels) {
  let next = 0;
  const color = labels.all.map((l) => (labels.swap.includes(l) ? SWAP_COLOR : PALETTE[next++ % PALETTE.length]));
  const dash = labels.all.map((l) => (labels.swap.includes(l) ? SWAP_DASH : [1, 0]));
  return { color, dash };
}

function normalizedSpec(data) {
  const labels = labelsOf(data);
  const scales = labelScales(labels);
  const rows = [];
  for (const w of data.workloads) {
    for (const r of w.runs || []) {
      const value = normalized(w, r);
      if (value === null || value <= 0) continue; // errors and missing times are left out, not drawn as zero
      rows.push({ workload: w.title || w.name, label: r.label, share: r.budget * 100, value });
    }
  }
  const legend = { title: null, labelLimit: 0, orient: 'bottom', columns: 6, symbolType: 'stroke', symbolSize: 300, symbolStrokeWidth: 2 };
  // An explicit domain and 1-2-5 ticks: vega's "nice" log domain pads a decade each way and
  // crowds the axis with unlabelled ticks.
  const values = rows.map((r) => r.value).concat(1);
  const lo = Math.min(...values) / 1.25;
  const hi = Math.max(...values) * 1.25;
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const t = +(m * 10 ** e).toPrecision(1);
      if (t >= lo && t <= hi) ticks.push(t);
    }
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Performance with part of the working set local, normalised to all-local (1.0 = plain ArrayBuffer)',
      subtitle: machineLine(data.machine),
      anchor: 'start',
    },
    data: { values: rows },
    facet: {
      field: 'workload',
      type: 'nominal',
      sort: data.workloads.map((w) => w.title || w.name),
      header: { title: null, labelFontSize: 13, labelFontWeight: 'bold', labelLimit: 0 },
    },
    columns: 3,
    spec: {
      width: 220,
      height: 170,
      layer: [
        {
          mark: { type: 'rule', color: '#999999', strokeWidth: 1 },
          encoding: { y: { datum: 1 } },
        },
        {
          mark: { type: 'line', point: true, strokeWidth: 1.8 },
          encoding: {
            x: {
              field: 'share',
              type: 'ordinal',
              sort: 'descending',
              title: 'local memory share',
              axis: { labelAngle: 0, labelExpr: "datum.value + '%'" },
            },
            y: {
              field: 'value',
              type: 'quantitative',
              scale: { type: 'log', domain: [lo, hi], nice: false },
              axis: { values: ticks, grid: true, gridOpacity: 0.5 },
              title: 'speed vs all-local (log)',
            },
            color: { field: 'label', type: 'nominal', scale: { domain: labels.all, range: scales.color }, legend },
            strokeDash: { field: 'label', type: 'nominal', scale: { domain: labels.all, range: scales.dash }, legend },
          },
        },
      ],
    },
    // Own x axis per panel, so a missing panel in the last row draws no stray axis.
    resolve: { scale: { y: 'shared' }, axis: { x: 'independent' } },
  };
}

/** At most ~400 points per curve: enough for a smooth CDF, small enough for a readable SVG. */
function cdfPoints(label, samples) {
  const sorted = samples.filter((s) => isNum(s) && s > 0).sort((a, b) => a - b);
  const n = sorted.length;
  const step = Math.max(1, Math.floor(n / 400));
  const points = [];
  for (let i = 0; i < n; i += step) points.push({ label, us: sorted[i], fraction: (i + 1) / n });
  if (n && points[points.length - 1].fraction !== 1) points.push({ label, us: sorted[n - 1], fraction: 1 });
  return points;
}

function cdfSpec(data) {
  const entries = data.faultLatency || [];
  const values = entries.flatMap((e) => cdfPoints(e.label, e.samplesUs || []));
  const domain = entries.map((e) => e.label);
  const isSwap = (l) => /swap/i.test(l);
  let next = 0;
  const color = domain.map((l) => (isSwap(l) ? SWAP_COLOR : PALETTE[next++ % PALETTE.length]));
  const dash = domain.map((l) => (isSwap(l) ? SWAP_DASH : [1, 0]));
  const legend = { title: null, labelLimit: 0, orient: 'bottom', columns: 1, symbolType: 'stroke', symbolSize: 300, symbolStrokeWidth: 2 };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Demand-fault latency, CDF', subtitle: machineLine(data.machine), anchor: 'start' },
    width: 520,
    height: 280,
    data: { values },
    mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1.8 },
    encoding: {
      x: { field: 'us', type: 'quantitative', scale: { type: 'log' }, title: 'fault latency (µs, log)' },
      y: { field: 'fraction', type: 'quantitative', scale: { domain: [0, 1] }, title: 'fraction of faults ≤ x' },
      color: { field: 'label', type: 'nominal', scale: { domain, range: color }, legend },
      strokeDash: { field: 'label', type: 'nominal', scale: { domain, range: dash }, legend },
    },
  };
}

// ---- markdown ---------------------------------------------------------------------------------

function workloadSection(data, w, budgets, labels) {
  const out = [];
  const local = w.local && isNum(w.local.median) ? `${fmtSec(w.local.median)} s` : '—';
  out.push(`### ${w.title || w.name} (\`${w.name}\`)`, '');
  out.push(`${w.description ? `${String(w.description).replace(/\.$/, '')}. ` : ''}Working set ${fmtBytes(w.workingSetBytes)}; all-local median ${local}.`, '');
  out.push(`| policy | ${budgets.map(pct).join(' | ')} |`);
  out.push(`|---|${budgets.map(() => '---').join('|')}|`);
  const present = labels.all.filter((l) => (w.runs || []).some((r) => r.label === l));
  for (const label of present) {
    const cells = budgets.map((b) => {
      const run = findRun(w, label, b);
      const value = normalized(w, run);
      return value === null ? '—' : `${fmtNorm(value)} (${fmtSec(run.median)} s)`;
    });
    out.push(`| ${cell(label)} | ${cells.join(' | ')} |`);
  }
  if (labels.swap.length) {
    const cells = budgets.map((b) => {
      const best = bestFarmem(w, b);
      const swap = swapValue(w, b);
      return best && swap ? `${fmtRatio(best.value / swap)} (${cell(best.label)})` : '—';
    });
    out.push(`| **farmem / swap** | ${cells.join(' | ')} |`);
  }
  const errors = (w.runs || []).filter((r) => r.error);
  for (const r of errors) out.push('', `- ${r.label} at ${pct(r.budget)}: ${String(r.error).replace(/\s+/g, ' ')}`);
  out.push('');
  return out;
}

function barSection(data, budgets) {
  const out = ['### The bar, at 25% local', ''];
  const at = 0.25;
  if (!budgets.includes(at)) {
    out.push('This run has no 25% budget.', '');
    return out;
  }
  out.push('| workload | best farmem (policy) | kernel swap | farmem / swap | farmem faster than swap |');
  out.push('|---|---|---|---|---|');
  for (const w of data.workloads) {
    const best = bestFarmem(w, at);
    const swap = swapValue(w, at);
    const bestText = best ? `${fmtNorm(best.value)} (${cell(best.label)})` : '—';
    const ratio = best && swap ? fmtRatio(best.value / swap) : '—';
    const faster = best && swap ? fasterThanSwap(best.run, swapRun(w, at), best.value > swap) : '—';
    out.push(`| ${cell(w.title || w.name)} | ${bestText} | ${swap === null ? '—' : fmtNorm(swap)} | ${ratio} | ${faster} |`);
  }
  out.push('');
  for (const name of ['quicksort', 'columns']) {
    const w = data.workloads.find((x) => x.name === name);
    if (!w) {
      out.push(`- \`${name}\`: not in this run.`);
      continue;
    }
    const best = bestFarmem(w, at);
    if (!best) {
      out.push(`- \`${name}\`: no farmem time at 25%.`);
      continue;
    }
    // Every sample against every sample, as for swap above: the fastest all-local run against the slowest farmem one.
    const fastestLocal = fastestSample(w.local?.seconds);
    const slowestFarmem = slowestSample(best.run.seconds);
    const worst = Number.isFinite(fastestLocal) && Number.isFinite(slowestFarmem) && slowestFarmem > 0 ? fastestLocal / slowestFarmem : null;
    const verdict = best.value < 0.5 ? 'no' : worst === null || worst >= 0.5 ? 'yes' : 'by the medians; not sample for sample';
    out.push(
      `- \`${name}\`: best farmem ${fmtNorm(best.value)} of all-local (${cell(best.label)})` +
        (worst === null ? '' : `, ${fmtNorm(worst)} from its slowest sample against the fastest all-local one`) +
        `; ≥ 0.5: ${verdict}.`,
    );
  }
  const scan = data.workloads.find((x) => x.name === 'scan');
  let best = null;
  for (const r of scan ? scan.runs || [] : []) {
    if (r.system === 'swap' || r.budget !== at || r.error || !isNum(r.median) || r.median <= 0) continue;
    const gbps = scan.workingSetBytes / r.median / 1e9;
    if (!best || gbps > best.gbps) best = { gbps, label: r.label };
  }
  if (!scan) out.push('- `scan`: not in this run.');
  else if (!best) out.push('- `scan`: no farmem time at 25%.');
  else if (!isNum(data.tcpStreamGBps)) out.push(`- \`scan\`: ${best.gbps.toFixed(2)} GB/s (${cell(best.label)}); no TCP stream bandwidth measured.`);
  else {
    // Set against the stream measured beside the scan's own cell where the run has it; the run's fastest
    // median, which can come from another hour of a drifting host, is then given beside it.
    const beside = isNum(data.scanStreamGBps);
    const stream = beside ? data.scanStreamGBps : data.tcpStreamGBps;
    const percentOf = (gbps) => `${((100 * best.gbps) / gbps).toFixed(0)}%`;
    const which = beside
      ? `TCP stream measured beside it, ${stream.toFixed(2)} GB/s (the faster of ${besideScan(data.tcpStreamMeasurements).map((m) => m.gbPerSec.toFixed(2)).join(' before and ')} after)`
      : `TCP stream's ${stream.toFixed(2)} GB/s`;
    out.push(
      `- \`scan\`: ${best.gbps.toFixed(2)} GB/s (${cell(best.label)}) = ${percentOf(stream)} of the ${which}; ` +
        `60% is ${(0.6 * stream).toFixed(2)} GB/s; reached: ${scanVerdict(best.gbps, stream)}.` +
        (beside ? ` Against the run's fastest stream median, ${data.tcpStreamGBps.toFixed(2)} GB/s: ${percentOf(data.tcpStreamGBps)}.` : ''),
    );
  }
  out.push('');
  return out;
}

/**
 * How much of the working set each system kept resident over its timed runs, as a share of the working
 * set: swap's limit is steered towards the budget (apps/kernel-swap.js, apps/cell.js), farmem's pager
 * stays between its water marks under it. Results from before either was recorded have no rows.
 */
function residencySection(data, budgets) {
  const rows = [];
  for (const w of data.workloads) {
    for (const budget of budgets) {
      const swap = swapRun(w, budget);
      const ws = swap?.cgroup?.workingSet;
      const farmem = (w.runs || []).filter((r) => r.system === 'farmem' && r.budget === budget && isNum(r.residentBytes));
      if (!ws && !farmem.length) continue;
      const share = (bytes) => `${((100 * bytes) / w.workingSetBytes).toFixed(0)}%`;
      const calibration = swap?.cgroup?.calibration;
      let swapText = '—';
      if (swap?.cgroup && !ws) swapText = 'not measured (working set not found), limit not steered';
      if (ws) {
        const timed = swap.cgroup.timed;
        const mean = timed?.length ? (timed.at(-1).startResidentBytes + timed.at(-1).endResidentBytes) / 2 : null;
        swapText = mean === null ? share(ws.residentBytes) : `${share(mean)} (${share(timed.at(-1).startResidentBytes)} → ${share(timed.at(-1).endResidentBytes)})`;
        const offTarget = mean !== null && !onTarget(mean, budgetBytes(budget, w.workingSetBytes), w.workingSetBytes);
        if (swap.cgroup.uncalibratedAfterOomKill) swapText += ', limit not steered (retry after an OOM kill)';
        else if (offTarget) swapText += `, off target after ${timed.length} timed tries`;
        else if (calibration && !calibration.converged) swapText += ', not converged';
        if (swap.cgroup.pageClusterAfterOomKill !== undefined) swapText += `, page-cluster ${swap.cgroup.pageClusterAfterOomKill} (retry after an OOM kill)`;
        const rescue = swap.cgroup.oomRescue;
        if (rescue?.rescues > 0) {
          swapText += `, ${rescue.rescues} ${rescue.rescues === 1 ? 'stall' : 'stalls'} at the limit woken by raising it (at most ${(rescue.maxRaiseBytes / 1048576).toFixed(0)} MiB, ` +
            `${rescue.raisedMs.toFixed(0)} ms in all, calibration included)`;
        }
      }
      const values = farmem.map((r) => r.residentBytes);
      const low = values.length ? share(Math.min(...values)) : null;
      const high = values.length ? share(Math.max(...values)) : null;
      const farmemText = low === null ? '—' : low === high ? low : `${low}–${high}`;
      rows.push(`| ${cell(w.title || w.name)} | ${pct(budget)} | ${swapText} | ${farmemText} |`);
    }
  }
  if (!rows.length) return [];
  // Results from before limitFile was recorded wrote memory.max on v2.
  const files = new Set();
  for (const w of data.workloads) {
    for (const r of w.runs || []) {
      if (r.system === 'swap' && r.cgroup) files.add(r.cgroup.limitFile || (data.swap?.cgroup === 'v2' ? 'memory.max' : 'memory.limit_in_bytes'));
    }
  }
  const knob = files.size ? ` (${[...files].map((f) => `\`${f}\``).join(', ')})` : '';
  return [
    '### Resident share of the working set',
    '',
    'Kernel swap: the mean of the resident share before and after the timed runs (before → after), read from ' +
      `/proc/self/pagemap. Its cgroup limit${knob} is steered, in untimed runs and then over the timed ones, until that mean is ` +
      'within 5% (at least 512 KiB) of the budget. farmem: right after the timed runs, for each policy; the pager keeps ' +
      'between 85% and 95% of its budget (all of it at 100%, where the cell sets evictHighWater 1).',
    '',
    '| workload | budget | kernel swap | farmem (all policies) |',
    '|---|---|---|---|',
    ...rows,
    '',
  ];
}

function faultSection(data) {
  const entries = (data.faultLatency || []).filter((e) => (e.samplesUs || []).length);
  if (!entries.length) return [];
  const out = ['### Demand-fault latency', '', '| measurement | samples | p50 µs | p90 µs | p99 µs |', '|---|---|---|---|---|'];
  for (const e of entries) {
    const s = e.samplesUs.filter(isNum).sort((a, b) => a - b);
    const q = (p) => fmtUs(quantile(s, p));
    out.push(`| ${cell(e.label)} | ${s.length} | ${q(0.5)} | ${q(0.9)} | ${q(0.99)} |`);
  }
  out.push('');
  return out;
}

/**
 * The scan bar's verdict. A stream that moved less than the scan itself moved over the same loopback
 * measured no ceiling, and the bar is not judged. Runs whose receiver read with 'data' events met that
 * often here: the fresh Buffer a read faulted its pages in, and the stream ran at 0.5 GB/s for minutes.
 */
function scanVerdict(scanGBps, streamGBps) {
  if (scanGBps > streamGBps) return 'not judged: the stream moved less than the scan itself did over the same loopback, so it measured no ceiling';
  return scanGBps >= 0.6 * streamGBps ? 'yes' : 'no';
}

/** The stream measurements made just before and just after the scan's cell at 25%, in that order. */
function besideScan(measurements) {
  return (measurements || []).filter((m) => m.when === 'scan-before' || m.when === 'scan-after');
}

/** When the suite measured the stream (tcpStreamMeasurements[].when), as the report says it. */
const STREAM_WHEN = {
  start: 'at the start',
  end: 'at the end',
  'scan-before': 'just before the scan at 25%',
  'scan-after': 'just after the scan at 25%',
};

/** The run's fastest stream median, and every median the run measured. */
function streamLine(data) {
  if (!isNum(data.tcpStreamGBps)) return 'not measured';
  const measured = (data.tcpStreamMeasurements || []).filter((m) => isNum(m.gbPerSec));
  const method = streamMethod(measured[0]);
  if (measured.length < 2) return `${data.tcpStreamGBps.toFixed(2)} GB/s${method}`;
  const each = measured.map((m) => `${m.gbPerSec.toFixed(2)} ${STREAM_WHEN[m.when] ?? m.when}`).join(', ');
  return `${data.tcpStreamGBps.toFixed(2)} GB/s, the faster of the run's medians (${each})${method}`;
}

/**
 * How the stream was read. Runs before 2026-12-05 night read it with 'data' events (a fresh Buffer a
 * read) and recorded no readBufferBytes; since then the receiver reads into one preallocated buffer.
 */
function streamMethod(measurement) {
  if (!measurement || !isNum(measurement.readBufferBytes)) return "; 64 KiB writes, read with 'data' events";
  return `; ${formatKiB(measurement.writeBytes)} writes, read into one preallocated ${formatKiB(measurement.readBufferBytes)} buffer`;
}

function formatKiB(bytes) {
  return bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : `${bytes / 1024} KiB`;
}

/** The suite's --huge-pages, and in how many farmem runs it applied (results written before it say nothing). */
function hugePagesLine(data) {
  if (data.hugePages === 'off') return '`off` (every page lands on its own)';
  const runs = data.workloads.flatMap((w) => w.runs).filter((r) => r.system === 'farmem' && typeof r.hugePagesUsed === 'boolean');
  const used = runs.filter((r) => r.hugePagesUsed).length;
  return `\`${data.hugePages}\`, in effect in ${used} of ${runs.length} farmem runs (whole 2 MiB blocks a stream asks for land as one huge page)`;
}

function markdownSection(data, { resultsRel, imgRel, hasCdf }) {
  const budgets = budgetsOf(data);
  const labels = labelsOf(data);
  const swap = data.swap || {};
  const out = [];
  out.push('## Applications: farmem against kernel swap', '');
  out.push(`_Generated by \`node bench/report.js\` from [${resultsRel}](${resultsRel}); edits between the apps markers are overwritten._`, '');
  out.push(`Machine: ${machineLine(data.machine)}.  `);
  out.push(`Command: \`${data.command || 'npx farmem bench'}\`.  `);
  out.push(`TCP loopback stream: ${streamLine(data)}.  `);
  if (data.hugePages) out.push(`farmem hugePages: ${hugePagesLine(data)}.  `);
  out.push(`CPU placement: ${describePlacement(data.cpus)}.  `);
  if (swap.available) {
    const how = [swap.cgroup && `cgroup ${swap.cgroup}`, swap.swapFile && `swap file \`${swap.swapFile}\``].filter(Boolean).join(', ');
    out.push(`Kernel swap: measured${how ? ` (${how})` : ''}.`);
  } else {
    out.push(`Kernel swap: not measured: ${swap.reason || 'no reason recorded'}.`);
  }
  out.push('');
  out.push('Each cell: speed relative to the same workload on a plain ArrayBuffer (all-local median / run median; ' +
    '1.00 = all-local, higher is better), with the run\'s median seconds in parentheses. "—": no time (failed or not run). ' +
    'The farmem / swap row divides the best farmem policy\'s figure (named) by kernel swap\'s at the same budget.', '');
  out.push(`![Speed relative to all-local, per workload and local memory share](${imgRel}/${NORMALIZED_SVG})`, '');
  for (const w of data.workloads) out.push(...workloadSection(data, w, budgets, labels));
  out.push(...barSection(data, budgets));
  out.push(...residencySection(data, budgets));
  out.push(...faultSection(data));
  if (hasCdf) out.push(`![Demand-fault latency CDF](${imgRel}/${CDF_SVG})`, '');
  return out.join('\n');
}

/** Replaces the lines between the markers (kept), or appends both markers at the end. */
function spliceSection(text, body) {
  const lines = text.split('\n');
  const begin = lines.findIndex((l) => l.trim() === BEGIN);
  const end = begin < 0 ? -1 : lines.findIndex((l, i) => i > begin && l.trim() === END);
  const block = [BEGIN, body.replace(/\n+$/, ''), END];
  if (begin >= 0 && end > begin) return [...lines.slice(0, begin), ...block, ...lines.slice(end + 1)].join('\n');
  const head = text.length && !text.endsWith('\n') ? `${text}\n` : text;
  return `${head}${head.length ? '\n' : ''}${block.join('\n')}\n`;
}

const posixRel = (from, to) => path.relative(from, to).split(path.sep).join('/') || '.';

// ---- entry points -----------------------------------------------------------------------------

async function renderReport({ resultsFile, imgDir, markdownFile } = {}) {
  const file = resultsFile ? path.resolve(resultsFile) : newestResults();
  const data = loadResults(file);
  const deps = await loadVega();
  const img = path.resolve(imgDir || path.join(ROOT, 'docs', 'img'));
  const doc = path.resolve(markdownFile || path.join(ROOT, 'docs', 'benchmark.md'));
  fs.mkdirSync(img, { recursive: true });
  const files = [];

  const normalizedFile = path.join(img, NORMALIZED_SVG);
  fs.writeFileSync(normalizedFile, await toSvg(deps, normalizedSpec(data)));
  files.push(normalizedFile);

  // No samples, no chart: an empty plot would only suggest a measurement that was not made.
  const hasCdf = (data.faultLatency || []).some((e) => (e.samplesUs || []).length);
  if (hasCdf) {
    const cdfFile = path.join(img, CDF_SVG);
    fs.writeFileSync(cdfFile, await toSvg(deps, cdfSpec(data)));
    files.push(cdfFile);
  }

  const docDir = path.dirname(doc);
  const body = markdownSection(data, { resultsRel: posixRel(docDir, file), imgRel: posixRel(docDir, img), hasCdf });
  const before = fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : '';
  fs.mkdirSync(docDir, { recursive: true });
  fs.writeFileSync(doc, spliceSection(before, body));
  files.push(doc);
  return { files };
}

async function main() {
  const { parseArgs } = require('node:util');
  let values;
  try {
    ({ values } = parseArgs({
      args: process.argv.slice(2),
      options: { results: { type: 'string' }, img: { type: 'string' }, doc: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (error) {
    throw benchError('FARMEM_INVALID_OPTION', `${error.message} (see npx farmem --help)`);
  }
  if (values.help) {
    console.log('usage: node bench/report.js [--results FILE] [--img docs/img] [--doc docs/benchmark.md]');
    return;
  }
  const { files } = await renderReport({ resultsFile: values.results, imgDir: values.img, markdownFile: values.doc });
  for (const f of files) console.log(`wrote ${path.relative(process.cwd(), f) || f}`);
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error.code ? `farmem bench --report: ${error.message} [${error.code}]` : error);
    process.exitCode = error.code === 'FARMEM_INVALID_OPTION' ? 2 : 1;
  });
}

module.exports = { renderReport, newestResults, spliceSection, fmtNorm, STREAM_WHEN, besideScan };
