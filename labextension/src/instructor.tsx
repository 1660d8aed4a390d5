/**
 * Course management for tutors and instructors: create/edit assignments, upload the source from a
 * folder, release, submissions with filters, regrade with live progress, logs, manual score,
 * release feedback, export CSV. The service decides who may do what; its refusals are shown.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import React, { useEffect, useState } from 'react';
import { assignmentPath, get, messageOf, send } from './api';
import { ActionButton, ErrorMessage, formatTime } from './common';
import { GradingView } from './grading';
import {
  formatScore,
  IAssignment,
  ILecture,
  ISubmission,
  runProgress,
  selectionProgress
} from './model';

export function InstructorView(props: { lectures: ILecture[] }): JSX.Element {
  const staff = props.lectures.filter(
    l => l.role === 'tutor' || l.role === 'instructor'
  );
  const [code, setCode] = useState(staff[0]?.code || '');
  const lecture = staff.find(l => l.code === code);
  return (
    <div className="jp-grader-instructor">
      <label>
        Lecture{' '}
        <select
          className="jp-mod-styled"
          value={code}
          onChange={e => setCode(e.target.value)}
        >
          {staff.map(l => (
            <option key={l.code} value={l.code}>
              {l.name || l.code} ({l.role})
            </option>
          ))}
        </select>
      </label>
      {lecture && <LectureAdmin key={lecture.code} lecture={lecture} />}
    </div>
  );
}

interface IForm {
  name: string;
  kind: string;
  title: string;
  due_date: string;
  late_until: string;
  late_penalty: string;
  max_submissions: string;
  feedback_policy: string;
  timeout: string;
  cell_timeout: string;
}

const EMPTY: IForm = {
  name: '',
  kind: 'notebook',
  title: '',
  due_date: '',
  late_until: '',
  late_penalty: '0',
  max_submissions: '',
  feedback_policy: 'manual',
  timeout: '',
  cell_timeout: ''
};

/** `datetime-local` value (local time) ↔ the service's ISO time. */
const toLocalInput = (iso?: string | null) => {
  if (!iso) {
    return '';
  }
  const t = new Date(iso);
  const shifted = new Date(t.getTime() - t.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
};
const fromLocalInput = (value: string) =>
  value ? new Date(value).toISOString() : null;
const numberOrNull = (value: string) =>
  value.trim() === '' ? null : Number(value);

/** The service's create/update body from the form (`name` only when creating). */
export function formBody(form: IForm, creating: boolean): { [key: string]: unknown } {
  const body: { [key: string]: unknown } = {
    title: form.title.trim() || null,
    due_date: fromLocalInput(form.due_date),
    late_until: fromLocalInput(form.late_until),
    late_penalty: Number(form.late_penalty || 0),
    max_submissions: numberOrNull(form.max_submissions),
    feedback_policy: form.feedback_policy,
    settings: {
      timeout: numberOrNull(form.timeout),
      cell_timeout: numberOrNull(form.cell_timeout)
    }
  };
  if (creating) {
    body.name = form.name.trim();
    body.kind = form.kind;
  }
  return body;
}

function formOf(a: IAssignment): IForm {
  const settings = (a.settings || {}) as { [key: string]: any };
  return {
    name: a.name,
    kind: a.kind || 'notebook',
    title: a.title || '',
    due_date: toLocalInput(a.due_date),
    late_until: toLocalInput(a.late_until),
    late_penalty: String(a.late_penalty ?? 0),
    max_submissions: a.max_submissions == null ? '' : String(a.max_submissions),
    feedback_policy: a.feedback_policy || 'manual',
    timeout: settings.timeout == null ? '' : String(settings.timeout),
    cell_timeout: settings.cell_timeout == null ? '' : String(settings.cell_timeout)
  };
}

function LectureAdmin(props: { lecture: ILecture }): JSX.Element {
  const code = props.lecture.code;
  const [assignments, setAssignments] = useState<IAssignment[]>([]);
  const [selected, setSelected] = useState<string | null>(null);
  const [editing, setEditing] = useState<IAssignment | 'new' | null>(null);
  const [error, setError] = useState<string | null>(null);
  const reload = async () => {
    const list = await get<{ items: IAssignment[] }>(
      `lectures/${encodeURIComponent(code)}/assignments`
    );
    setAssignments(list.items);
  };
  useEffect(() => {
    reload().catch(e => setError(messageOf(e)));
  }, [code]);
  const current = assignments.find(a => a.name === selected) || null;
  return (
    <div className="jp-grader-lecture-admin">
      <ErrorMessage message={error} />
      <div className="jp-grader-actions">
        <ActionButton label="New assignment" accept onClick={() => setEditing('new')} />
      </div>
      {editing && (
        <AssignmentForm
          lecture={code}
          assignment={editing === 'new' ? null : editing}
          onDone={async saved => {
            setEditing(null);
            if (saved) {
              await reload();
              setSelected(saved.name);
            }
          }}
        />
      )}
      <table className="jp-grader-table">
        <caption>Assignments</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Kind</th>
            <th scope="col">Status</th>
            <th scope="col">Due</th>
            <th scope="col">Source</th>
          </tr>
        </thead>
        <tbody>
          {assignments.map(a => (
            <tr key={a.name} className={a.name === selected ? 'jp-mod-selected' : ''}>
              <td>
                <button
                  type="button"
                  className="jp-grader-link"
                  aria-pressed={a.name === selected}
                  onClick={() => setSelected(a.name)}
                >
                  {a.title || a.name}
                </button>
              </td>
              <td>{a.kind || 'notebook'}</td>
              <td>{a.status}</td>
              <td>{formatTime(a.due_date)}</td>
              <td>{a.has_source ? 'uploaded' : 'none'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {current && (
        <AssignmentAdmin
          key={current.name}
          assignment={current}
          onEdit={() => setEditing(current)}
          onChanged={() => reload().catch(e => setError(messageOf(e)))}
        />
      )}
    </div>
  );
}

function Field(props: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  type?: string;
  disabled?: boolean;
  step?: string;
}): JSX.Element {
  return (
    <label className="jp-grader-field">
      <span>{props.label}</span>
      <input
        className="jp-mod-styled"
        type={props.type || 'text'}
        step={props.step}
        value={props.value}
        disabled={props.disabled}
        onChange={e => props.onChange(e.target.value)}
      />
    </label>
  );
}

function AssignmentForm(props: {
  lecture: string;
  assignment: IAssignment | null;
  onDone: (saved: IAssignment | null) => void;
}): JSX.Element {
  const creating = props.assignment === null;
  const [form, setForm] = useState<IForm>(
    props.assignment ? formOf(props.assignment) : EMPTY
  );
  const [error, setError] = useState<string | null>(null);
  const set = (key: keyof IForm) => (value: string) =>
    setForm({ ...form, [key]: value });
  const save = async () => {
    setError(null);
    try {
      const saved = creating
        ? await send<IAssignment>(
            'POST',
            `lectures/${encodeURIComponent(props.lecture)}/assignments`,
            formBody(form, true)
          )
        : await send<IAssignment>(
            'PATCH',
            assignmentPath(props.lecture, form.name),
            formBody(form, false)
          );
      props.onDone(saved);
    } catch (e) {
      setError(messageOf(e));
    }
  };
  return (
    <form
      className="jp-grader-form"
      aria-label={creating ? 'New assignment' : `Edit ${form.name}`}
      onSubmit={e => {
        e.preventDefault();
        void save();
      }}
    >
      <Field label="Name" value={form.name} onChange={set('name')} disabled={!creating} />
      <label className="jp-grader-field">
        <span>Kind</span>
        <select
          className="jp-mod-styled"
          value={form.kind}
          disabled={!creating}
          onChange={e => set('kind')(e.target.value)}
        >
          <option value="notebook">notebook (nbgrader cells)</option>
          <option value="command">command (grader.yaml and a harness)</option>
        </select>
      </label>
      <Field label="Title" value={form.title} onChange={set('title')} />
      <Field label="Due" type="datetime-local" value={form.due_date} onChange={set('due_date')} />
      <Field label="Late until" type="datetime-local" value={form.late_until} onChange={set('late_until')} />
      <Field label="Late penalty (0–1)" type="number" step="0.05" value={form.late_penalty} onChange={set('late_penalty')} />
      <Field label="Max submissions (empty: unlimited)" type="number" value={form.max_submissions} onChange={set('max_submissions')} />
      <label className="jp-grader-field">
        <span>Feedback</span>
        <select
          className="jp-mod-styled"
          value={form.feedback_policy}
          onChange={e => set('feedback_policy')(e.target.value)}
        >
          <option value="manual">manual (release by hand)</option>
          <option value="immediate">immediate</option>
        </select>
      </label>
      <Field label="Timeout (s)" type="number" value={form.timeout} onChange={set('timeout')} />
      <Field label="Cell timeout (s)" type="number" value={form.cell_timeout} onChange={set('cell_timeout')} />
      <ErrorMessage message={error} />
      <div className="jp-grader-actions">
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept">
          {creating ? 'Create' : 'Save'}
        </button>
        <ActionButton label="Cancel" onClick={() => props.onDone(null)} />
      </div>
    </form>
  );
}

interface IRun {
  id: number;
  total: number;
  counts: { [key: string]: number };
  done: boolean;
}

interface IProgress {
  fraction: number;
  text: string;
  done: boolean;
}

/** A regrade being followed: all (the service's grading run) or a selection (its submissions). */
type Tracking =
  | { kind: 'run'; run: IRun }
  | { kind: 'selection'; ids: number[]; progress: IProgress };

function progressOf(tracking: Tracking): IProgress {
  return tracking.kind === 'run'
    ? { ...runProgress(tracking.run), done: tracking.run.done }
    : tracking.progress;
}

function AssignmentAdmin(props: {
  assignment: IAssignment;
  onEdit: () => void;
  onChanged: () => void;
}): JSX.Element {
  const a = props.assignment;
  const base = assignmentPath(a.lecture, a.name);
  const [folder, setFolder] = useState(`${a.lecture}/${a.name}-source`);
  const [csvPath, setCsvPath] = useState(`${a.lecture}-${a.name}-scores.csv`);
  const [all, setAll] = useState(false);
  const [student, setStudent] = useState('');
  const [statusFilter, setStatusFilter] = useState('');
  const [minScore, setMinScore] = useState('');
  const [submissions, setSubmissions] = useState<ISubmission[]>([]);
  const [chosen, setChosen] = useState<Set<number>>(new Set());
  const [tracking, setTracking] = useState<Tracking | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [grading, setGrading] = useState<number | null>(null);

  const load = async () => {
    const query: { [key: string]: string } = {};
    if (all) {
      query.all = '1';
    }
    if (student.trim()) {
      query.student = student.trim();
    }
    const list = await get<{ items: ISubmission[] }>(`${base}/submissions`, query);
    setSubmissions(list.items);
  };
  const act = async (action: () => Promise<void>) => {
    setError(null);
    setInfo(null);
    try {
      await action();
    } catch (e) {
      setError(messageOf(e));
    }
  };
  useEffect(() => {
    void act(load);
  }, [base, all]);

  const allSubmissions = async () =>
    (await get<{ items: ISubmission[] }>(`${base}/submissions`, { all: '1' })).items;

  // Follow a regrade until it is done, refreshing the table as it goes (a failed poll stops it,
  // saying why).
  useEffect(() => {
    if (!tracking || progressOf(tracking).done) {
      return;
    }
    const timer = window.setTimeout(() => {
      (async () => {
        if (tracking.kind === 'run') {
          const run = await get<IRun>(`${base}/grading-runs/${tracking.run.id}`);
          setTracking({ kind: 'run', run });
        } else {
          const progress = selectionProgress(tracking.ids, await allSubmissions());
          setTracking({ ...tracking, progress });
        }
        await load();
      })().catch(e => setError(messageOf(e)));
    }, 400);
    return () => window.clearTimeout(timer);
  }, [tracking]);

  const shown = submissions.filter(
    s =>
      (!statusFilter || s.auto_status === statusFilter) &&
      (minScore === '' || (s.score ?? -Infinity) >= Number(minScore))
  );
  const toggle = (id: number) => {
    const next = new Set(chosen);
    next.has(id) ? next.delete(id) : next.add(id);
    setChosen(next);
  };
  const progress = tracking ? progressOf(tracking) : null;
  const regrading = !!progress && !progress.done;

  const upload = () =>
    act(async () => {
      await send('POST', `${base}/source`, { path: folder });
      setInfo(`Uploaded ${folder} as the source.`);
      props.onChanged();
    });
  const release = () =>
    act(async () => {
      await send('POST', `${base}/release`);
      setInfo('Released.');
      props.onChanged();
    });
  const regradeAll = () =>
    act(async () => {
      const run = await send<IRun>('POST', `${base}/regrade`, { all: true });
      setTracking({ kind: 'run', run });
    });
  const regradeSelected = () =>
    act(async () => {
      const ids = Array.from(chosen);
      const reply = await send<{ jobs: { submission: number }[] }>('POST', `${base}/regrade`, {
        submissions: ids
      });
      setInfo(`Regrading ${ids.length} submission(s).`);
      // The service accepted each with a queued job (and marked it queued): from here on, a
      // final state is the new grading's.
      const accepted = reply.jobs.map(job => ({ id: job.submission, auto_status: 'queued' as const }));
      setTracking({ kind: 'selection', ids, progress: selectionProgress(ids, accepted) });
      await load();
    });
  const releaseFeedback = () =>
    act(async () => {
      const result = await send<{ released: number }>('POST', `${base}/feedback-release`);
      setInfo(`Feedback released for ${result.released} submission(s).`);
    });
  const exportCsv = () =>
    act(async () => {
      const result = await send<{ path: string }>('POST', `${base}/export`, { path: csvPath });
      setInfo(`Scores exported to ${result.path}.`);
    });
  const openQueue = () =>
    act(async () => {
      const queue = await get<{ items: { id: number }[] }>(`${base}/grading-queue`);
      if (!queue.items.length) {
        setInfo('No submission waits for manual grading.');
        return;
      }
      setGrading(queue.items[0].id);
    });
  const showLogs = (s: ISubmission) =>
    act(async () => {
      const logs = await get<{ text: string }>(`${base}/submissions/${s.id}/logs`);
      await showDialog({
        title: `Grading log of #${s.id} (${s.user})`,
        body: <pre className="jp-grader-logs">{logs.text || '(empty)'}</pre>,
        buttons: [Dialog.okButton({ label: 'Close' })]
      });
    });
  const grade = (s: ISubmission) =>
    act(async () => {
      const result = await showDialog<{ score: string; comment: string }>({
        title: `Manual score for #${s.id} (${s.user})`,
        body: new ScoreBody(s),
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save' })]
      });
      if (!result.button.accept || !result.value) {
        return;
      }
      await send('PATCH', `${base}/submissions/${s.id}`, {
        score: Number(result.value.score),
        comment: result.value.comment
      });
      await load();
    });

  return (
    <section className="jp-grader-assignment-admin" aria-label={`Manage ${a.name}`}>
      <h3>
        {a.title || a.name} <span className="jp-grader-role">({a.status})</span>
      </h3>
      <ErrorMessage message={error} />
      {info && <p className="jp-grader-info" role="status">{info}</p>}
      <div className="jp-grader-actions">
        <ActionButton label="Edit" onClick={props.onEdit} />
        <Field label="Source folder" value={folder} onChange={setFolder} />
        <ActionButton label="Upload source" onClick={upload} />
        <ActionButton label="Release" accept onClick={release} disabled={a.status === 'released'} />
      </div>
      <div className="jp-grader-filters" role="group" aria-label="Filters">
        <label>
          <input type="checkbox" checked={all} onChange={e => setAll(e.target.checked)} /> All
          submissions (not only the latest)
        </label>
        <Field label="Student" value={student} onChange={setStudent} />
        <label className="jp-grader-field">
          <span>Status</span>
          <select className="jp-mod-styled" value={statusFilter} onChange={e => setStatusFilter(e.target.value)}>
            <option value="">any</option>
            {['queued', 'running', 'graded', 'failed'].map(s => (
              <option key={s} value={s}>{s}</option>
            ))}
          </select>
        </label>
        <Field label="Min score" type="number" value={minScore} onChange={setMinScore} />
        <ActionButton label="Apply" onClick={() => act(load)} />
      </div>
      <div className="jp-grader-actions">
        <ActionButton
          label="Regrade selected"
          onClick={regradeSelected}
          disabled={!chosen.size || regrading}
        />
        <ActionButton label="Regrade all" warn onClick={regradeAll} disabled={regrading} />
        <ActionButton label="Release feedback" onClick={releaseFeedback} />
        <Field label="CSV file" value={csvPath} onChange={setCsvPath} />
        <ActionButton label="Export CSV" onClick={exportCsv} />
        <ActionButton label="Grade queue" title="Grade the submissions waiting for a person, oldest first" onClick={openQueue} />
      </div>
      {grading !== null && (
        <GradingView
          base={base}
          submission={grading}
          onOpen={setGrading}
          onSaved={() => void load().catch(e => setError(messageOf(e)))}
          onClose={() => {
            setGrading(null);
            void act(load);
          }}
        />
      )}
      {progress && (
        <div className="jp-grader-progress">
          <progress
            max={1}
            value={progress.fraction}
            aria-label="Regrade progress"
          />
          <span role="status">{progress.text}</span>
        </div>
      )}
      <table className="jp-grader-table jp-grader-submissions">
        <caption>Submissions ({shown.length})</caption>
        <thead>
          <tr>
            <th scope="col">
              <span className="jp-grader-sr">Select</span>
            </th>
            <th scope="col">#</th>
            <th scope="col">Student</th>
            <th scope="col">Submitted</th>
            <th scope="col">Status</th>
            <th scope="col">Manual</th>
            <th scope="col">Score</th>
            <th scope="col">
              <span className="jp-grader-sr">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {shown.map(s => (
            <tr key={s.id}>
              <td>
                <input
                  type="checkbox"
                  aria-label={`Select submission ${s.id} of ${s.user}`}
                  checked={chosen.has(s.id)}
                  onChange={() => toggle(s.id)}
                />
              </td>
              <td>{s.id}</td>
              <td>{s.user}</td>
              <td>
                {formatTime(s.submitted_at)}
                {s.late ? ' (late)' : ''}
              </td>
              <td title={s.status_detail || undefined}>{s.auto_status}</td>
              <td>{s.manual_status || ''}</td>
              <td>
                {formatScore(s.score, s.max_score)}
                {s.comment ? ` — ${s.comment}` : ''}
              </td>
              <td>
                <ActionButton label="Logs" title={`Logs of #${s.id}`} onClick={() => showLogs(s)} />
                <ActionButton label="Grade" title={`Grade the cells of #${s.id}`} onClick={() => setGrading(s.id)} />
                <ActionButton label="Score" title={`Manual score for #${s.id}`} onClick={() => grade(s)} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** The manual score dialog's body: a score and a comment, labelled. */
class ScoreBody extends Widget {
  private _score: HTMLInputElement;
  private _comment: HTMLTextAreaElement;
  constructor(s: ISubmission) {
    super();
    const score = document.createElement('label');
    score.textContent = `Score (max ${s.max_score ?? '?'}) `;
    this._score = document.createElement('input');
    this._score.type = 'number';
    this._score.step = 'any';
    this._score.className = 'jp-mod-styled';
    this._score.value = String(s.score ?? '');
    score.appendChild(this._score);
    const comment = document.createElement('label');
    comment.textContent = 'Comment ';
    this._comment = document.createElement('textarea');
    this._comment.className = 'jp-mod-styled';
    this._comment.value = s.comment || '';
    comment.appendChild(this._comment);
    this.node.append(score, document.createElement('br'), comment);
  }
  getValue(): { score: string; comment: string } {
    return { score: this._score.value, comment: this._comment.value };
  }
}
