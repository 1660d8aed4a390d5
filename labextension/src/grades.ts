/**
 * Pure logic of the grading view (no DOM, no Lab, tested with vitest): which grade belongs to which
 * notebook cell, the one PUT body of a save (points checked against 0..max), the text of a cell's
 * outputs, and the next/previous submission of the grading queue.
 */

/** One cell's grade as the service answers `GET …/grades` (items). */
export interface IGrade {
  grade_id: string;
  notebook: string;
  kind: string;
  auto: number | null;
  manual: number | null;
  extra_credit: number;
  max: number;
  comment: string | null;
  needs_manual: boolean;
}

export interface IGrades {
  submission: number;
  version: number;
  manual_status: string;
  cell_score: number | null;
  items: IGrade[];
}

/** What the tutor typed for a cell: strings, as in the inputs ('' points: grading's count again). */
export interface IEdit {
  points: string;
  comment: string;
  extra_credit: string;
}

export interface IQueueItem {
  id: number;
  user: string;
  submitted_at?: string | null;
  previous: number | null;
  next: number | null;
}

export interface IHistoryEntry {
  id: number;
  at?: string | null;
  user?: string | null;
  what: string;
  old: unknown;
  new: unknown;
  comment?: string | null;
}

/** The inputs' starting values of a grade. */
export function editOf(grade: IGrade): IEdit {
  return {
    points: grade.manual == null ? '' : String(grade.manual),
    comment: grade.comment || '',
    extra_credit: String(grade.extra_credit || 0)
  };
}

/** What a grade counts now: manual if set, else automatic (none: 0), plus extra credit. */
export function gradePoints(grade: IGrade): number {
  const base = grade.manual != null ? grade.manual : grade.auto || 0;
  return base + (grade.extra_credit || 0);
}

export type SaveBody =
  | { ok: true; body: { version: number; grades: { [id: string]: { [k: string]: unknown } } } }
  | { ok: false; message: string };

/**
 * The PUT body for the cells whose inputs differ from the grades read (only the changed fields),
 * or why it cannot be sent: points outside 0..max, or a number that is not one.
 */
export function saveBody(grades: IGrades, edits: { [id: string]: IEdit }): SaveBody {
  const changes: { [id: string]: { [k: string]: unknown } } = {};
  for (const grade of grades.items) {
    const edit = edits[grade.grade_id];
    if (!edit) {
      continue;
    }
    const before = editOf(grade);
    const change: { [k: string]: unknown } = {};
    if (edit.points.trim() !== before.points) {
      if (edit.points.trim() === '') {
        change.points = null;
      } else {
        const points = Number(edit.points);
        if (!Number.isFinite(points) || points < 0 || points > grade.max) {
          return {
            ok: false,
            message: `Points of ${grade.grade_id} must be between 0 and ${grade.max}`
          };
        }
        change.points = points;
      }
    }
    if (edit.comment !== before.comment) {
      change.comment = edit.comment.trim() === '' ? null : edit.comment;
    }
    if (edit.extra_credit.trim() !== before.extra_credit) {
      const extra = Number(edit.extra_credit.trim() || 0);
      if (!Number.isFinite(extra) || extra < 0) {
        return {
          ok: false,
          message: `Extra credit of ${grade.grade_id} must be a number of at least 0`
        };
      }
      change.extra_credit = extra;
    }
    if (Object.keys(change).length) {
      changes[grade.grade_id] = change;
    }
  }
  if (!Object.keys(changes).length) {
    return { ok: false, message: 'Nothing changed' };
  }
  return { ok: true, body: { version: grades.version, grades: changes } };
}

/** The grade_id of a notebook cell (nbgrader metadata), if it is graded. */
export function cellGradeId(cell: any): string | null {
  const id = cell?.metadata?.nbgrader?.grade_id;
  return typeof id === 'string' && id ? id : null;
}

/** A cell's source as one string (notebooks store it as a string or a list of lines). */
export function sourceText(cell: any): string {
  const source = cell?.source;
  return Array.isArray(source) ? source.join('') : typeof source === 'string' ? source : '';
}

const joined = (value: unknown): string =>
  Array.isArray(value) ? value.join('') : typeof value === 'string' ? value : '';

/** A code cell's outputs as plain text (streams, results' text/plain, errors' name and value). */
export function outputText(cell: any): string {
  const parts: string[] = [];
  for (const output of Array.isArray(cell?.outputs) ? cell.outputs : []) {
    if (output?.output_type === 'stream') {
      parts.push(joined(output.text));
    } else if (output?.output_type === 'error') {
      parts.push(`${output.ename}: ${output.evalue}`);
    } else if (output?.data) {
      const text = joined(output.data['text/plain']);
      parts.push(text || `[${Object.keys(output.data).join(', ')}]`);
    }
  }
  return parts.join('\n').replace(/\u001b\[[0-9;]*m/g, '');
}

/** The grades no notebook cell shows (a command assignment's tests, or a cell that is gone). */
export function unplacedGrades(grades: IGrade[], notebooks: { cells: any[] }[]): IGrade[] {
  const placed = new Set<string>();
  for (const notebook of notebooks) {
    for (const cell of notebook.cells) {
      const id = cellGradeId(cell);
      if (id) {
        placed.add(id);
      }
    }
  }
  return grades.filter(g => !placed.has(g.grade_id));
}

/**
 * The submission to go to from `current` in the queue: its neighbour when it is queued, else the
 * first queued one (after a save the current one may have left the queue), never itself.
 */
export function queueStep(
  queue: IQueueItem[],
  current: number,
  direction: 'next' | 'previous'
): number | null {
  const here = queue.find(item => item.id === current);
  if (here) {
    return here[direction];
  }
  const others = queue.filter(item => item.id !== current);
  if (!others.length) {
    return null;
  }
  return direction === 'next' ? others[0].id : others[others.length - 1].id;
}

/**
 * One history entry in words. A cell's change holds the fields that changed ({"points": 1, ...}):
 * "explain: points — → 2, comment — → half"; other entries (manual_status, regrade): "what: old → new".
 */
export function historyText(entry: IHistoryEntry): string {
  const show = (value: unknown) =>
    value === null || value === undefined
      ? '—'
      : typeof value === 'object'
        ? JSON.stringify(value)
        : String(value);
  const isFields = (v: unknown): v is { [k: string]: unknown } =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  const comment = entry.comment ? ` (${entry.comment})` : '';
  if (isFields(entry.new) && (entry.old == null || isFields(entry.old))) {
    const old = (entry.old || {}) as { [k: string]: unknown };
    const fields = Object.keys(entry.new).map(
      key => `${key} ${show(old[key])} → ${show((entry.new as { [k: string]: unknown })[key])}`
    );
    return `${entry.what}: ${fields.join(', ')}${comment}`;
  }
  return `${entry.what}: ${show(entry.old)} → ${show(entry.new)}${comment}`;
}
