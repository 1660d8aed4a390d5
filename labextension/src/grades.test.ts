import { describe, expect, it } from 'vitest';
import {
  cellGradeId,
  editOf,
  gradePoints,
  historyText,
  IGrade,
  IGrades,
  outputText,
  queueStep,
  saveBody,
  sourceText,
  unplacedGrades
} from './grades';

function grade(overrides: Partial<IGrade> = {}): IGrade {
  return {
    grade_id: 'explain',
    notebook: 'basics',
    kind: 'manual',
    auto: null,
    manual: null,
    extra_credit: 0,
    max: 3,
    comment: null,
    needs_manual: true,
    ...overrides
  };
}

const grades = (...items: IGrade[]): IGrades => ({
  submission: 7,
  version: 4,
  manual_status: 'needed',
  cell_score: 2,
  items
});

describe('saving grades', () => {
  it('sends only the changed fields of changed cells, with the version read', () => {
    const g = grades(grade(), grade({ grade_id: 'test_add', kind: 'test', auto: 2, max: 2, needs_manual: false }));
    const edits = {
      explain: { ...editOf(g.items[0]), points: '1.5', comment: 'half' },
      test_add: editOf(g.items[1])
    };
    expect(saveBody(g, edits)).toEqual({
      ok: true,
      body: { version: 4, grades: { explain: { points: 1.5, comment: 'half' } } }
    });
  });

  it('refuses points outside 0..max and says which cell', () => {
    const g = grades(grade());
    for (const points of ['-1', '3.5', 'abc']) {
      const result = saveBody(g, { explain: { ...editOf(g.items[0]), points } });
      expect(result).toEqual({ ok: false, message: 'Points of explain must be between 0 and 3' });
    }
    expect(saveBody(g, { explain: { ...editOf(g.items[0]), points: '3' } }).ok).toBe(true);
    expect(saveBody(g, { explain: { ...editOf(g.items[0]), points: '0' } }).ok).toBe(true);
  });

  it('clears manual points and comments, checks extra credit, and says when nothing changed', () => {
    const g = grades(grade({ manual: 2, comment: 'ok', extra_credit: 1 }));
    const edit = editOf(g.items[0]);
    expect(edit).toEqual({ points: '2', comment: 'ok', extra_credit: '1' });
    expect(saveBody(g, { explain: edit })).toEqual({ ok: false, message: 'Nothing changed' });
    expect(saveBody(g, { explain: { ...edit, points: '', comment: '' } })).toEqual({
      ok: true,
      body: { version: 4, grades: { explain: { points: null, comment: null } } }
    });
    expect(saveBody(g, { explain: { ...edit, extra_credit: '-2' } }).ok).toBe(false);
    expect(saveBody(g, { explain: { ...edit, extra_credit: '0.5' } })).toEqual({
      ok: true,
      body: { version: 4, grades: { explain: { extra_credit: 0.5 } } }
    });
  });

  it('counts manual over automatic, plus extra credit', () => {
    expect(gradePoints(grade({ auto: 1, extra_credit: 0.5 }))).toBe(1.5);
    expect(gradePoints(grade({ auto: 1, manual: 3, extra_credit: 0.5 }))).toBe(3.5);
    expect(gradePoints(grade())).toBe(0);
  });
});

describe('notebook cells', () => {
  const cells = [
    { cell_type: 'markdown', source: ['# Title\n', 'text'], metadata: {} },
    {
      cell_type: 'code',
      source: 'print(1)',
      metadata: { nbgrader: { grade_id: 'test_add', grade: true } },
      outputs: [
        { output_type: 'stream', name: 'stdout', text: ['1\n'] },
        { output_type: 'execute_result', data: { 'text/plain': '2' } },
        { output_type: 'display_data', data: { 'image/png': 'xx' } },
        { output_type: 'error', ename: 'ValueError', evalue: '\u001b[31mbad\u001b[0m', traceback: [] }
      ]
    }
  ];

  it('reads sources, grade ids and outputs as text', () => {
    expect(sourceText(cells[0])).toBe('# Title\ntext');
    expect(cellGradeId(cells[0])).toBeNull();
    expect(cellGradeId(cells[1])).toBe('test_add');
    expect(outputText(cells[1])).toBe('1\n\n2\n[image/png]\nValueError: bad');
    expect(outputText({})).toBe('');
  });

  it('lists the grades no cell shows (a command assignment\'s tests)', () => {
    const items = [grade({ grade_id: 'test_add' }), grade({ grade_id: 'square(2)' })];
    expect(unplacedGrades(items, [{ cells }]).map(g => g.grade_id)).toEqual(['square(2)']);
  });
});

describe('grading queue', () => {
  const queue = [
    { id: 3, user: 'a', previous: null, next: 5 },
    { id: 5, user: 'b', previous: 3, next: 9 },
    { id: 9, user: 'c', previous: 5, next: null }
  ];
  it('steps to the neighbours of a queued submission', () => {
    expect(queueStep(queue, 5, 'next')).toBe(9);
    expect(queueStep(queue, 5, 'previous')).toBe(3);
    expect(queueStep(queue, 9, 'next')).toBeNull();
  });
  it('from a submission no longer queued, goes to the queue\'s ends, never to itself', () => {
    expect(queueStep(queue, 4, 'next')).toBe(3);
    expect(queueStep(queue, 4, 'previous')).toBe(9);
    expect(queueStep([], 4, 'next')).toBeNull();
    expect(queueStep([{ id: 4, user: 'a', previous: null, next: null }], 4, 'next')).toBeNull();
  });
});

it('puts a history entry in words', () => {
  expect(historyText({ id: 1, what: 'explain', old: null, new: 2, comment: 'half' })).toBe(
    'explain: — → 2 (half)'
  );
  expect(historyText({ id: 2, what: 'manual_status', old: 'needed', new: 'done' })).toBe(
    'manual_status: needed → done'
  );
  expect(
    historyText({ id: 3, what: 'explain', old: { points: null }, new: { points: 2, comment: 'half' } })
  ).toBe('explain: points — → 2, comment — → half');
});
