/**
 * The grading view of one submission: its notebooks read-only with each graded cell's points
 * (0..max), comment and extra credit beside it, one save (a 409 says someone else saved first and
 * reloads), the manual status, the final score, the history, and next/previous through the
 * grading queue (buttons, Alt+→ / Alt+←).
 */
import React, { useEffect, useState } from 'react';
import { GraderError, get, messageOf, send } from './api';
import { ActionButton, ErrorMessage, formatTime } from './common';
import {
  cellGradeId,
  editOf,
  gradePoints,
  IEdit,
  IGrade,
  IGrades,
  IHistoryEntry,
  IQueueItem,
  outputText,
  queueStep,
  saveBody,
  sourceText,
  unplacedGrades,
  historyText
} from './grades';
import { formatScore, ISubmission } from './model';

interface INotebook {
  path: string;
  cells: any[];
  error: string | null;
}

interface ILoaded {
  submission: ISubmission & { final_score?: number | null };
  grades: IGrades;
  notebooks: INotebook[];
  history: IHistoryEntry[];
  queue: IQueueItem[];
}

export function GradingView(props: {
  base: string;
  submission: number;
  onOpen: (id: number) => void;
  onSaved: () => void;
  onClose: () => void;
}): JSX.Element {
  const { base, submission } = props;
  const sub = `${base}/submissions/${submission}`;
  const [loaded, setLoaded] = useState<ILoaded | null>(null);
  const [edits, setEdits] = useState<{ [id: string]: IEdit }>({});
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = async () => {
    const [s, grades, notebooks, history, queue] = await Promise.all([
      get(sub),
      get<IGrades>(`${sub}/grades`),
      get<{ notebooks: INotebook[] }>(`${sub}/notebooks`),
      get<{ items: IHistoryEntry[] }>(`${sub}/history`),
      get<{ items: IQueueItem[] }>(`${base}/grading-queue`)
    ]);
    const initial: { [id: string]: IEdit } = {};
    for (const grade of grades.items) {
      initial[grade.grade_id] = editOf(grade);
    }
    setEdits(initial);
    setLoaded({
      submission: s,
      grades,
      notebooks: notebooks.notebooks,
      history: history.items,
      queue: queue.items
    });
  };
  useEffect(() => {
    setLoaded(null);
    setError(null);
    setInfo(null);
    load().catch(e => setError(messageOf(e)));
  }, [sub]);

  const save = async () => {
    if (!loaded || busy) {
      return;
    }
    setError(null);
    setInfo(null);
    const body = saveBody(loaded.grades, edits);
    if (!body.ok) {
      setError(body.message);
      return;
    }
    setBusy(true);
    try {
      await send('PUT', `${sub}/grades`, body.body);
      await load();
      setInfo('Saved.');
      props.onSaved();
    } catch (e) {
      if (e instanceof GraderError && e.status === 409) {
        setError(
          `Not saved: these grades were changed by someone else since you opened them (${e.message}). ` +
            'Their current grades are shown now; enter your changes again.'
        );
        await load().catch(() => undefined);
      } else {
        setError(messageOf(e));
      }
    } finally {
      setBusy(false);
    }
  };

  const step = (direction: 'next' | 'previous') => {
    const target = loaded ? queueStep(loaded.queue, submission, direction) : null;
    if (target !== null) {
      props.onOpen(target);
    }
  };

  const onKeyDown = (e: React.KeyboardEvent) => {
    if (!e.altKey) {
      return;
    }
    if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
      e.preventDefault();
      step(e.key === 'ArrowRight' ? 'next' : 'previous');
    } else if (e.key === 's' || e.key === 'S') {
      e.preventDefault();
      void save();
    }
  };

  const next = loaded ? queueStep(loaded.queue, submission, 'next') : null;
  const previous = loaded ? queueStep(loaded.queue, submission, 'previous') : null;
  const grades = new Map((loaded?.grades.items || []).map(g => [g.grade_id, g]));
  const controls = (grade: IGrade) => (
    <CellGrade
      key={grade.grade_id}
      grade={grade}
      edit={edits[grade.grade_id] || editOf(grade)}
      onChange={edit => setEdits({ ...edits, [grade.grade_id]: edit })}
    />
  );
  const s = loaded?.submission;
  return (
    <section
      className="jp-grader-grading"
      aria-label={`Grading submission ${submission}`}
      onKeyDown={onKeyDown}
    >
      <div className="jp-grader-actions">
        <ActionButton label="← Previous" title="Previous in the grading queue (Alt+←)" onClick={() => step('previous')} disabled={previous === null} />
        <ActionButton label="Next →" title="Next in the grading queue (Alt+→)" onClick={() => step('next')} disabled={next === null} />
        <ActionButton label="Save grades" accept title="Save (Alt+S)" onClick={() => void save()} disabled={!loaded || busy} />
        <ActionButton label="Close" onClick={props.onClose} />
      </div>
      <h3>
        Submission #{submission}
        {s ? ` of ${s.user}, ${formatTime(s.submitted_at)}${s.late ? ' (late)' : ''}` : ''}
      </h3>
      <ErrorMessage message={error} />
      {info && <p className="jp-grader-info" role="status">{info}</p>}
      {!loaded && !error && <p>Loading…</p>}
      {loaded && s && (
        <dl className="jp-grader-facts">
          <dt>Manual grading</dt>
          <dd className="jp-grader-manual-status">{loaded.grades.manual_status}</dd>
          <dt>Cells</dt>
          <dd>{formatScore(loaded.grades.cell_score, s.max_score)}</dd>
          <dt>Final score</dt>
          <dd className="jp-grader-final-score">{formatScore(s.final_score ?? s.score, s.max_score)}</dd>
          <dt>In the queue</dt>
          <dd>{loaded.queue.length} submission(s)</dd>
        </dl>
      )}
      {loaded?.notebooks.map(notebook => (
        <div key={notebook.path} className="jp-grader-notebook" aria-label={`Notebook ${notebook.path}`}>
          <h4>{notebook.path}</h4>
          <ErrorMessage message={notebook.error} />
          {notebook.cells.map((cell, i) => {
            const id = cellGradeId(cell);
            const grade = id ? grades.get(id) : undefined;
            const output = cell?.cell_type === 'code' ? outputText(cell) : '';
            return (
              <div key={i} className={`jp-grader-cell jp-grader-cell-${cell?.cell_type}`}>
                <pre className="jp-grader-source">{sourceText(cell)}</pre>
                {output && <pre className="jp-grader-output">{output}</pre>}
                {grade && controls(grade)}
              </div>
            );
          })}
        </div>
      ))}
      {loaded && unplacedGrades(loaded.grades.items, loaded.notebooks).length > 0 && (
        <div className="jp-grader-notebook" aria-label="Tests">
          <h4>Tests</h4>
          {unplacedGrades(loaded.grades.items, loaded.notebooks).map(controls)}
        </div>
      )}
      {loaded && (
        <details className="jp-grader-history" open={loaded.history.length > 0}>
          <summary>Grading history ({loaded.history.length})</summary>
          <ol>
            {loaded.history.map(entry => (
              <li key={entry.id}>
                {formatTime(entry.at)} {entry.user || 'grading'}: {historyText(entry)}
              </li>
            ))}
          </ol>
        </details>
      )}
    </section>
  );
}

function CellGrade(props: {
  grade: IGrade;
  edit: IEdit;
  onChange: (edit: IEdit) => void;
}): JSX.Element {
  const { grade, edit } = props;
  const set = (key: keyof IEdit) => (e: React.ChangeEvent<HTMLInputElement | HTMLTextAreaElement>) =>
    props.onChange({ ...edit, [key]: e.target.value });
  return (
    <fieldset className="jp-grader-cell-grade" aria-label={`Grade of ${grade.grade_id}`}>
      <legend>
        {grade.grade_id} ({grade.kind}){grade.needs_manual && grade.manual == null ? ' — needs grading' : ''}: automatic{' '}
        {grade.auto == null ? '—' : grade.auto}, counts {gradePoints(grade)} of {grade.max}
      </legend>
      <label className="jp-grader-field">
        <span>Points (0–{grade.max})</span>
        <input
          className="jp-mod-styled"
          type="number"
          min={0}
          max={grade.max}
          step="any"
          placeholder={grade.auto == null ? '' : String(grade.auto)}
          value={edit.points}
          onChange={set('points')}
        />
      </label>
      <label className="jp-grader-field">
        <span>Extra credit</span>
        <input className="jp-mod-styled" type="number" min={0} step="any" value={edit.extra_credit} onChange={set('extra_credit')} />
      </label>
      <label className="jp-grader-field">
        <span>Comment</span>
        <textarea className="jp-mod-styled" value={edit.comment} onChange={set('comment')} />
      </label>
    </fieldset>
  );
}
