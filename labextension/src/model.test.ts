import { describe, expect, it } from 'vitest';
import {
  applyEvent,
  deadline,
  formatDuration,
  formatScore,
  IAssignment,
  ISubmission,
  runProgress,
  selectionProgress,
  statusLabel,
  submissionsLabel,
  submitCheck,
  testRows
} from './model';

const NOW = Date.parse('2030-01-10T12:00:00Z');
const HOUR = 3600 * 1000;

function assignment(overrides: Partial<IAssignment> = {}): IAssignment {
  return {
    lecture: 'intro',
    name: 'basics',
    status: 'released',
    due_date: new Date(NOW + 2 * HOUR).toISOString(),
    late_until: null,
    late_penalty: 0,
    max_submissions: 3,
    submissions_used: 0,
    ...overrides
  };
}

function submission(overrides: Partial<ISubmission> = {}): ISubmission {
  return {
    id: 7,
    lecture: 'intro',
    assignment: 'basics',
    user: 'alice',
    submitted_at: '2030-01-10T11:00:00Z',
    auto_status: 'queued',
    score: null,
    max_score: null,
    ...overrides
  };
}

describe('status model', () => {
  it('goes queued → running → graded with the score', () => {
    let s = submission();
    expect(statusLabel(s)).toBe('Queued');
    s = applyEvent(s, { submission: 7, auto_status: 'running' });
    expect(statusLabel(s)).toBe('Running');
    s = applyEvent(s, { submission: 7, auto_status: 'graded', score: 10, max_score: 10 });
    expect(s.auto_status).toBe('graded');
    expect(statusLabel(s)).toBe('Graded: 10/10');
  });

  it('ignores events of other submissions', () => {
    const s = submission();
    expect(applyEvent(s, { submission: 8, auto_status: 'graded', score: 1 })).toBe(s);
  });

  it('does not go back from running to queued (a replayed frame)', () => {
    const s = submission({ auto_status: 'running' });
    expect(applyEvent(s, { submission: 7, auto_status: 'queued' }).auto_status).toBe('running');
  });

  it('starts over when a graded submission is queued again (a regrade)', () => {
    const s = submission({ auto_status: 'graded', score: 4, max_score: 10 });
    const next = applyEvent(s, { submission: 7, auto_status: 'queued' });
    expect(next.auto_status).toBe('queued');
    expect(statusLabel(next)).toBe('Queued');
  });

  it('keeps the score hidden until results are released', () => {
    const s = applyEvent(submission({ auto_status: 'running' }), {
      submission: 7,
      auto_status: 'graded'
    });
    expect(statusLabel(s)).toBe('Graded (results not released yet)');
  });

  it('names a failed grading', () => {
    expect(statusLabel(submission({ auto_status: 'failed' }))).toBe('Grading failed');
  });
});

describe('formatting', () => {
  it.each([
    [0, '0 s'],
    [12_400, '12 s'],
    [4 * 60_000 + 9_000, '4 min 09 s'],
    [2 * HOUR + 5 * 60_000, '2 h 05 min'],
    [24 * HOUR, '1 day 0 h'],
    [3 * 24 * HOUR + 4 * HOUR + 1, '3 days 4 h'],
    [-5000, '0 s']
  ])('duration %d ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('formats scores', () => {
    expect(formatScore(9.5, 10)).toBe('9.5/10');
    expect(formatScore(1 / 3, 1)).toBe('0.33/1');
    expect(formatScore(null, 10)).toBe('–');
    expect(formatScore(3, null)).toBe('3');
  });

  it('says used of allowed, or unlimited', () => {
    expect(submissionsLabel(assignment({ submissions_used: 1 }))).toBe('1 of 3 submissions used');
    expect(submissionsLabel(assignment({ max_submissions: null, submissions_used: 1 }))).toBe(
      '1 submission used (unlimited)'
    );
    expect(submissionsLabel(assignment({ max_submissions: 1, submissions_used: 0 }))).toBe(
      '0 of 1 submission used'
    );
  });
});

describe('deadline and late window', () => {
  const lateWindow = {
    due_date: new Date(NOW - HOUR).toISOString(),
    late_until: new Date(NOW + 30 * 60_000).toISOString(),
    late_penalty: 0.25
  };

  it('counts down to the due date', () => {
    expect(deadline(assignment(), NOW)).toEqual({ phase: 'open', text: 'Due in 2 h 00 min' });
    expect(deadline(assignment(), NOW + HOUR + 59 * 60_000 + 1000).text).toBe('Due in 59 s');
  });

  it('is in the late window after the due date, with the penalty', () => {
    expect(deadline(assignment(lateWindow), NOW)).toEqual({
      phase: 'late',
      text: 'Late window: 30 min 00 s left, 25% penalty'
    });
  });

  it('is closed after the late window', () => {
    const d = deadline(assignment(lateWindow), NOW + HOUR);
    expect(d.phase).toBe('closed');
    expect(d.text).toBe('Closed 2 h 00 min ago');
  });

  it('has no deadline without a due date', () => {
    expect(deadline(assignment({ due_date: null }), NOW).phase).toBe('no-deadline');
  });
});

describe('may the student submit', () => {
  const fetched = { fetched: true, role: 'student' };

  it('allows a fetched, released assignment before the deadline without asking', () => {
    expect(submitCheck(assignment(), NOW, fetched)).toEqual({
      allowed: true,
      reason: null,
      confirm: null
    });
  });

  it('gives the reason when it does not', () => {
    expect(submitCheck(assignment(), NOW, { fetched: false }).reason).toBe(
      'Fetch the assignment first.'
    );
    expect(submitCheck(assignment({ status: 'created' }), NOW, fetched).reason).toBe(
      'The assignment is not released.'
    );
    expect(submitCheck(assignment({ submissions_used: 3 }), NOW, fetched).reason).toBe(
      'All 3 allowed submissions are used.'
    );
    expect(
      submitCheck(assignment({ due_date: new Date(NOW - 1000).toISOString() }), NOW, fetched)
        .reason
    ).toBe('The deadline has passed.');
    expect(submitCheck(assignment(), NOW, { ...fetched, busy: true }).allowed).toBe(false);
  });

  it('asks before the last allowed submission', () => {
    const check = submitCheck(assignment({ submissions_used: 2 }), NOW, fetched);
    expect(check.allowed).toBe(true);
    expect(check.confirm).toBe('This is your last allowed submission (3 of 3).');
  });

  it('asks before a late submission, naming the penalty', () => {
    const late = assignment({
      due_date: new Date(NOW - HOUR).toISOString(),
      late_until: new Date(NOW + HOUR).toISOString(),
      late_penalty: 0.1
    });
    expect(submitCheck(late, NOW, fetched).confirm).toBe(
      'The due date has passed: this submission counts as late with a 10% penalty.'
    );
  });

  it('never limits the count for unlimited assignments', () => {
    const check = submitCheck(assignment({ max_submissions: null, submissions_used: 99 }), NOW, fetched);
    expect(check).toEqual({ allowed: true, reason: null, confirm: null });
  });

  it('leaves staff to the service after the deadline and the limit', () => {
    const closed = assignment({
      due_date: new Date(NOW - HOUR).toISOString(),
      submissions_used: 3
    });
    expect(submitCheck(closed, NOW, { fetched: true, role: 'instructor' }).allowed).toBe(true);
  });
});

describe('per-test table and progress', () => {
  it('lists every graded cell with points, status and the visible message', () => {
    const rows = testRows({
      notebooks: {
        basics: {
          cells: {
            test_add: { grade_id: 'test_add', max_points: 2, points: 2, status: 'passed', error: null },
            test_mul: {
              grade_id: 'test_mul',
              max_points: 3,
              points: 0,
              status: 'failed',
              error: { name: 'AssertionError', message: 'mul must multiply' }
            },
            essay: { grade_id: 'essay', max_points: 5, points: null, status: 'needs-manual' }
          }
        }
      }
    });
    expect(rows.map(r => [r.name, formatScore(r.points, r.max), r.status, r.message])).toEqual([
      ['test_add', '2/2', 'passed', ''],
      ['test_mul', '0/3', 'failed', 'AssertionError: mul must multiply'],
      ['essay', '–', 'needs-manual', '']
    ]);
    expect(testRows(null)).toEqual([]);
  });

  it('shows a command assignment\'s tests the same way, with their output', () => {
    const rows = testRows({
      engine: 'command',
      notebooks: {
        'results.json': {
          cells: {
            'square(2)': { grade_id: 'square(2)', max_points: 1, points: 1, status: 'passed', error: null, output: 'ok' },
            'square(3)': { grade_id: 'square(3)', max_points: 1, points: 0, status: 'failed', error: null, output: '', withheld: true }
          }
        }
      }
    });
    expect(rows.map(r => [r.name, formatScore(r.points, r.max), r.status, r.message])).toEqual([
      ['square(2)', '1/1', 'passed', 'ok'],
      ['square(3)', '0/1', 'failed', '']
    ]);
  });

  it('measures a grading run by finished jobs', () => {
    const counts = { queued: 2, running: 1, succeeded: 6, failed: 1, cancelled: 0 };
    expect(runProgress({ total: 10, counts, done: false })).toEqual({
      fraction: 0.7,
      text: '7 of 10 graded, 1 failed'
    });
    expect(runProgress({ total: 0, counts: {}, done: true }).fraction).toBe(1);
  });

  it('measures a regrade of selected submissions by their own states', () => {
    const list = [
      submission({ id: 1, auto_status: 'graded', score: 10, max_score: 10 }),
      submission({ id: 2, auto_status: 'running' }),
      submission({ id: 3, auto_status: 'queued' }),
      submission({ id: 4, auto_status: 'failed' })
    ];
    expect(selectionProgress([1, 2, 3], list)).toEqual({
      fraction: 1 / 3,
      text: '1 of 3 graded',
      done: false
    });
    expect(selectionProgress([1, 4], list)).toEqual({
      fraction: 1,
      text: '2 of 2 graded, 1 failed (done)',
      done: true
    });
    // A withdrawn submission is no longer listed: it is not waited for.
    expect(selectionProgress([2, 9], list).text).toBe('1 of 2 graded');
  });
});
