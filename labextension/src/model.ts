/**
 * Pure logic of the panels: no DOM, no network, so vitest covers it on its own.
 *
 * Field names are the service's (grader_service/api/openapi.yaml), as the server extension passes
 * them through unchanged.
 */

export type AutoStatus =
  | 'not_queued'
  | 'queued'
  | 'running'
  | 'graded'
  | 'failed';

export interface ILecture {
  code: string;
  name?: string;
  state?: string;
  role?: 'student' | 'tutor' | 'instructor' | null;
}

export interface IAssignment {
  lecture: string;
  name: string;
  title?: string | null;
  kind?: 'notebook' | 'command';
  status: 'created' | 'released' | 'completed';
  due_date?: string | null;
  late_until?: string | null;
  late_penalty?: number;
  max_submissions?: number | null;
  submissions_used?: number;
  feedback_policy?: string;
  grading_policy?: string;
  max_score?: number | null;
  has_source?: boolean;
  settings?: { [key: string]: unknown };
}

export interface ISubmission {
  id: number;
  lecture: string;
  assignment: string;
  user: string;
  submitted_at: string;
  late?: boolean;
  auto_status: AutoStatus;
  manual_status?: string;
  results_released?: boolean;
  score?: number | null;
  auto_score?: number | null;
  max_score?: number | null;
  comment?: string | null;
  feedback_status?: 'none' | 'generated' | 'released';
  status_detail?: string | null;
}

/** One `event: status` frame of the service's event stream. */
export interface IStatusEvent {
  submission: number;
  auto_status: AutoStatus;
  score?: number | null;
  max_score?: number | null;
}

export const FINAL_STATUSES: ReadonlyArray<AutoStatus> = ['graded', 'failed'];

const ORDER: { [key in AutoStatus]: number } = {
  not_queued: 0,
  queued: 1,
  running: 2,
  graded: 3,
  failed: 3
};

export function isFinal(status: AutoStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

/**
 * A submission with a status event applied.
 *
 * Events can arrive out of order (a reconnect replays the current state after a later frame was
 * already seen); a submission never goes back from running to queued in the display, except when a
 * final state is followed by queued (a regrade starts over).
 */
export function applyEvent(
  submission: ISubmission,
  event: IStatusEvent
): ISubmission {
  if (event.submission !== submission.id) {
    return submission;
  }
  const before = submission.auto_status;
  const after = event.auto_status;
  const regrade = isFinal(before) && !isFinal(after);
  if (!regrade && ORDER[after] < ORDER[before]) {
    return submission;
  }
  const next: ISubmission = { ...submission, auto_status: after };
  if ('score' in event) {
    next.score = event.score;
  }
  if ('max_score' in event) {
    next.max_score = event.max_score;
  }
  return next;
}

/** What a student reads for a submission's state. */
export function statusLabel(submission: ISubmission): string {
  switch (submission.auto_status) {
    case 'not_queued':
      return 'Not queued';
    case 'queued':
      return 'Queued';
    case 'running':
      return 'Running';
    case 'failed':
      return 'Grading failed';
    case 'graded':
      if (submission.score === null || submission.score === undefined) {
        return 'Graded (results not released yet)';
      }
      return `Graded: ${formatScore(submission.score, submission.max_score)}`;
  }
}

export function formatScore(
  score: number | null | undefined,
  max: number | null | undefined
): string {
  if (score === null || score === undefined) {
    return '–';
  }
  const round = (x: number) => String(Math.round(x * 100) / 100);
  return max === null || max === undefined
    ? round(score)
    : `${round(score)}/${round(max)}`;
}

/** "3 days 4 h", "2 h 05 min", "4 min 09 s", "12 s": coarse far away, exact when close. */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.floor(ms / 1000));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  if (days > 0) {
    return `${days} day${days === 1 ? '' : 's'} ${hours} h`;
  }
  if (hours > 0) {
    return `${hours} h ${pad(minutes)} min`;
  }
  if (minutes > 0) {
    return `${minutes} min ${pad(seconds)} s`;
  }
  return `${seconds} s`;
}

export type Phase = 'open' | 'late' | 'closed' | 'no-deadline';

export interface IDeadline {
  phase: Phase;
  /** What the assignment view shows, e.g. "Due in 2 h 05 min". */
  text: string;
}

function parseTime(value: string | null | undefined): number | null {
  if (!value) {
    return null;
  }
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

/** Where `now` stands against the due date and the late window, as words. */
export function deadline(assignment: IAssignment, now: number): IDeadline {
  const due = parseTime(assignment.due_date);
  const lateUntil = parseTime(assignment.late_until);
  if (due === null) {
    return { phase: 'no-deadline', text: 'No due date' };
  }
  if (now < due) {
    return { phase: 'open', text: `Due in ${formatDuration(due - now)}` };
  }
  if (lateUntil !== null && now < lateUntil) {
    const penalty = assignment.late_penalty
      ? `, ${Math.round(assignment.late_penalty * 100)}% penalty`
      : '';
    return {
      phase: 'late',
      text: `Late window: ${formatDuration(lateUntil - now)} left${penalty}`
    };
  }
  return { phase: 'closed', text: `Closed ${formatDuration(now - due)} ago` };
}

/** "1 of 3 submissions used", or "1 submission used (unlimited)". */
export function submissionsLabel(assignment: IAssignment): string {
  const used = assignment.submissions_used ?? 0;
  const max = assignment.max_submissions;
  if (max === null || max === undefined) {
    return `${used} submission${used === 1 ? '' : 's'} used (unlimited)`;
  }
  return `${used} of ${max} submission${max === 1 ? '' : 's'} used`;
}

export interface ISubmitCheck {
  allowed: boolean;
  /** Why not, shown beside the disabled button. */
  reason: string | null;
  /** Ask before submitting: late, or the last allowed submission. */
  confirm: string | null;
}

/**
 * Whether a student may submit now, as the panel knows it (the service has the last word: its
 * refusal message is shown when it disagrees).
 */
export function submitCheck(
  assignment: IAssignment,
  now: number,
  options: { fetched: boolean; busy?: boolean; role?: string | null }
): ISubmitCheck {
  const no = (reason: string): ISubmitCheck => ({
    allowed: false,
    reason,
    confirm: null
  });
  const staff = options.role === 'tutor' || options.role === 'instructor';
  if (assignment.status !== 'released') {
    return no('The assignment is not released.');
  }
  if (options.busy) {
    return no('A submission is being sent.');
  }
  if (!options.fetched) {
    return no('Fetch the assignment first.');
  }
  const used = assignment.submissions_used ?? 0;
  const max = assignment.max_submissions;
  if (!staff && max !== null && max !== undefined && used >= max) {
    return no(`All ${max} allowed submissions are used.`);
  }
  const { phase } = deadline(assignment, now);
  if (!staff && phase === 'closed') {
    return no('The deadline has passed.');
  }
  const notes: string[] = [];
  if (phase === 'late') {
    const penalty = assignment.late_penalty
      ? ` with a ${Math.round(assignment.late_penalty * 100)}% penalty`
      : '';
    notes.push(`The due date has passed: this submission counts as late${penalty}.`);
  }
  if (!staff && max !== null && max !== undefined && used === max - 1) {
    notes.push(`This is your last allowed submission (${max} of ${max}).`);
  }
  return {
    allowed: true,
    reason: null,
    confirm: notes.length ? notes.join(' ') : null
  };
}

/** One row of the per-test table. */
export interface ITestRow {
  notebook: string;
  name: string;
  points: number | null;
  max: number;
  status: string;
  message: string;
}

/** The per-test rows of a gradebook (see grader_service/convert/gradebook.py for its shape). */
export function testRows(gradebook: any): ITestRow[] {
  const rows: ITestRow[] = [];
  const notebooks = (gradebook && gradebook.notebooks) || {};
  for (const name of Object.keys(notebooks)) {
    const cells = notebooks[name]?.cells || {};
    for (const id of Object.keys(cells)) {
      const cell = cells[id] || {};
      const error = cell.error;
      rows.push({
        notebook: name,
        name: cell.grade_id ?? id,
        points: typeof cell.points === 'number' ? cell.points : null,
        max: typeof cell.max_points === 'number' ? cell.max_points : 0,
        status: cell.status ?? '',
        message: error
          ? [error.name, error.message].filter(Boolean).join(': ')
          : typeof cell.output === 'string'
            ? cell.output
            : ''
      });
    }
  }
  return rows;
}

/** Progress of a grading run as a fraction 0..1 and words. */
export function runProgress(run: {
  total: number;
  counts: { [key: string]: number };
  done: boolean;
}): { fraction: number; text: string } {
  // counts are the run's grading jobs by state (queued, running, succeeded, failed, cancelled)
  const finished =
    (run.counts.succeeded ?? 0) +
    (run.counts.failed ?? 0) +
    (run.counts.cancelled ?? 0);
  const fraction = run.total > 0 ? Math.min(1, finished / run.total) : 1;
  const failed = run.counts.failed ? `, ${run.counts.failed} failed` : '';
  return {
    fraction: run.done ? 1 : fraction,
    text: `${finished} of ${run.total} graded${failed}${run.done ? ' (done)' : ''}`
  };
}

/**
 * Progress of a regrade of selected submissions (the service has no run for a selection): each
 * submission's own state. The service marks them queued when it accepts the regrade, so a final
 * state seen afterwards is the new grading's; one no longer listed (withdrawn) counts as finished.
 */
export function selectionProgress(
  ids: number[],
  submissions: Pick<ISubmission, 'id' | 'auto_status'>[]
): { fraction: number; text: string; done: boolean } {
  const byId = new Map(submissions.map(s => [s.id, s]));
  let finished = 0;
  let failed = 0;
  for (const id of ids) {
    const s = byId.get(id);
    if (!s || isFinal(s.auto_status)) {
      finished += 1;
    }
    if (s?.auto_status === 'failed') {
      failed += 1;
    }
  }
  const done = finished === ids.length;
  const failures = failed ? `, ${failed} failed` : '';
  return {
    fraction: ids.length ? finished / ids.length : 1,
    text: `${finished} of ${ids.length} graded${failures}${done ? ' (done)' : ''}`,
    done
  };
}
