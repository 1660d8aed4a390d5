/**
 * The student's view: lectures → assignments with the deadline counting down, fetch, submit, live
 * status, score, per-test table, feedback, history and withdraw.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import React, { useCallback, useEffect, useState } from 'react';
import {
  fetchAssignment,
  folderOf,
  isFetched,
  reloadAssignment,
  submitAssignment
} from './actions';
import { assignmentPath, get, messageOf, send } from './api';
import { ActionButton, ErrorMessage, formatTime, useNow } from './common';
import {
  deadline,
  formatScore,
  IAssignment,
  ILecture,
  ISubmission,
  ITestRow,
  isFinal,
  statusLabel,
  submissionsLabel,
  submitCheck,
  testRows
} from './model';
import { SubmissionWatcher } from './watcher';

export interface IStudentProps {
  app: JupyterFrontEnd;
  watcher: SubmissionWatcher;
  lectures: ILecture[];
  openFeedback: (submission: ISubmission) => void;
}

export function StudentView(props: IStudentProps): JSX.Element {
  // Lectures opened by code (a course the service does not list for this user: it says why).
  const [extra, setExtra] = useState<ILecture[]>([]);
  const [code, setCode] = useState('');
  const lectures = [
    ...props.lectures,
    ...extra.filter(e => !props.lectures.some(l => l.code === e.code))
  ];
  return (
    <div className="jp-grader-student">
      {!props.lectures.length && (
        <p className="jp-grader-empty">You are not in any lecture yet.</p>
      )}
      {lectures.map(lecture => (
        <LectureSection key={lecture.code} {...props} lecture={lecture} />
      ))}
      <form
        className="jp-grader-open"
        aria-label="Open a lecture by code"
        onSubmit={e => {
          e.preventDefault();
          const wanted = code.trim();
          if (wanted && !lectures.some(l => l.code === wanted)) {
            setExtra([...extra, { code: wanted, role: null }]);
          }
          setCode('');
        }}
      >
        <label className="jp-grader-field">
          <span>Lecture code</span>
          <input
            className="jp-mod-styled"
            value={code}
            onChange={e => setCode(e.target.value)}
          />
        </label>
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-reject">
          Open
        </button>
      </form>
    </div>
  );
}

function LectureSection(
  props: IStudentProps & { lecture: ILecture }
): JSX.Element {
  const { lecture } = props;
  const [assignments, setAssignments] = useState<IAssignment[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    get<{ items: IAssignment[] }>(
      `lectures/${encodeURIComponent(lecture.code)}/assignments`
    )
      .then(list => setAssignments(list.items))
      .catch(e => setError(messageOf(e)));
  }, [lecture.code]);
  const headingId = `grader-lecture-${lecture.code}`;
  return (
    <section className="jp-grader-lecture" aria-labelledby={headingId}>
      <h2 id={headingId}>
        {lecture.name || lecture.code}{' '}
        <span className="jp-grader-role">({lecture.role || 'no role'})</span>
      </h2>
      <ErrorMessage message={error} />
      {assignments === null && !error && <p>Loading…</p>}
      {assignments && !assignments.length && <p>No assignments yet.</p>}
      <ul className="jp-grader-assignments">
        {(assignments || []).map(a => (
          <li key={a.name}>
            <AssignmentCard {...props} initial={a} role={lecture.role} />
          </li>
        ))}
      </ul>
    </section>
  );
}

function AssignmentCard(
  props: IStudentProps & { initial: IAssignment; role?: string | null }
): JSX.Element {
  const { app, watcher, role } = props;
  const now = useNow();
  const [assignment, setAssignment] = useState(props.initial);
  const [fetched, setFetched] = useState(false);
  const [history, setHistory] = useState<ISubmission[]>([]);
  const [latest, setLatest] = useState<ISubmission | null>(null);
  const [rows, setRows] = useState<ITestRow[] | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const base = assignmentPath(assignment.lecture, assignment.name);
  const id = `grader-${assignment.lecture}-${assignment.name}`;

  const loadHistory = useCallback(async () => {
    const list = await get<{ items: ISubmission[] }>(`${base}/submissions`, {
      all: '1'
    });
    setHistory(list.items);
    const newest = list.items[0] || null;
    setLatest(newest ? watcher.current(newest.id) || newest : null);
    if (newest && !isFinal(newest.auto_status)) {
      watcher.watch(newest);
    }
  }, [base]);

  useEffect(() => {
    void isFetched(app, assignment).then(setFetched);
    loadHistory().catch(e => setError(messageOf(e)));
  }, [base]);

  // Live status of this assignment's submissions, from wherever they were submitted.
  useEffect(() => {
    const onChange = (_: unknown, s: ISubmission) => {
      if (s.lecture !== assignment.lecture || s.assignment !== assignment.name) {
        return;
      }
      setLatest(current =>
        !current || current.id <= s.id ? { ...(current || {}), ...s } : current
      );
      setHistory(list =>
        list.some(x => x.id === s.id)
          ? list.map(x => (x.id === s.id ? { ...x, ...s } : x))
          : [s, ...list]
      );
    };
    const onFinished = (_: unknown, s: ISubmission) => {
      if (s.lecture === assignment.lecture && s.assignment === assignment.name) {
        void reloadAssignment(assignment).then(setAssignment);
      }
    };
    watcher.changed.connect(onChange);
    watcher.finished.connect(onFinished);
    return () => {
      watcher.changed.disconnect(onChange);
      watcher.finished.disconnect(onFinished);
    };
  }, [base]);

  // The per-test table once the latest submission is graded and released.
  useEffect(() => {
    setRows(null);
    if (!latest || latest.auto_status !== 'graded' || latest.score == null) {
      return;
    }
    get(`${base}/submissions/${latest.id}/gradebook`)
      .then(book => setRows(testRows(book)))
      .catch(() => setRows(null));
  }, [latest?.id, latest?.auto_status, latest?.score]);

  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    setInfo(null);
    try {
      await action();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };

  const onFetch = () =>
    run(async () => {
      const result = await fetchAssignment(assignment);
      if (result) {
        setFetched(true);
        setInfo(
          `Fetched into ${result.path}/` +
            (result.backup ? ` (your previous files are in ${result.backup})` : '')
        );
        void app.commands.execute('filebrowser:go-to-path', {
          path: result.path
        });
      }
    });

  const onSubmit = () =>
    run(async () => {
      const submission = await submitAssignment(app, watcher, assignment, role);
      if (submission) {
        setLatest(submission);
        setHistory(list => [submission, ...list]);
        setAssignment(await reloadAssignment(assignment));
      }
    });

  const onWithdraw = (s: ISubmission) =>
    run(async () => {
      const answer = await showDialog({
        title: 'Withdraw submission?',
        body: `Submission #${s.id} of ${formatTime(s.submitted_at)} is deleted.`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Withdraw' })]
      });
      if (!answer.button.accept) {
        return;
      }
      await send('DELETE', `${base}/submissions/${s.id}`);
      await loadHistory();
      setAssignment(await reloadAssignment(assignment));
    });

  const due = deadline(assignment, now);
  const check = submitCheck(assignment, now, { fetched, busy, role });
  const reasonId = `${id}-reason`;
  return (
    <article className="jp-grader-assignment" aria-labelledby={`${id}-title`}>
      <h3 id={`${id}-title`}>{assignment.title || assignment.name}</h3>
      <dl className="jp-grader-facts">
        <dt>Due</dt>
        <dd>
          {formatTime(assignment.due_date)}{' '}
          <span className={`jp-grader-deadline jp-grader-${due.phase}`}>
            {due.text}
          </span>
        </dd>
        {assignment.late_until && (
          <>
            <dt>Late until</dt>
            <dd>{formatTime(assignment.late_until)}</dd>
          </>
        )}
        <dt>Submissions</dt>
        <dd className="jp-grader-used">{submissionsLabel(assignment)}</dd>
        <dt>Status</dt>
        <dd className="jp-grader-status" aria-live="polite">
          {latest ? statusLabel(latest) : 'Not submitted'}
        </dd>
      </dl>
      <div className="jp-grader-actions">
        <ActionButton label="Fetch" onClick={onFetch} disabled={busy} />
        <ActionButton
          label="Submit"
          accept
          onClick={onSubmit}
          disabled={!check.allowed}
          describedBy={check.allowed ? undefined : reasonId}
        />
        {latest && latest.feedback_status !== 'none' && latest.feedback_status && (
          <ActionButton
            label="Feedback"
            onClick={() => props.openFeedback(latest)}
          />
        )}
      </div>
      {assignment.kind === 'command' && (
        <p className="jp-grader-info">
          Submit sends the files of {folderOf(assignment)}/ (a command assignment: no notebook).
        </p>
      )}
      {!check.allowed && check.reason && (
        <p id={reasonId} className="jp-grader-reason">
          {check.reason}
        </p>
      )}
      {info && <p className="jp-grader-info">{info}</p>}
      <ErrorMessage message={error} />
      {rows && rows.length > 0 && <TestTable rows={rows} />}
      {history.length > 0 && (
        <details className="jp-grader-history">
          <summary>History ({history.length})</summary>
          <table>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Submitted</th>
                <th scope="col">Status</th>
                <th scope="col">Score</th>
                <th scope="col">
                  <span className="jp-grader-sr">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {history.map(s => (
                <tr key={s.id}>
                  <td>{s.id}</td>
                  <td>
                    {formatTime(s.submitted_at)}
                    {s.late ? ' (late)' : ''}
                  </td>
                  <td>{s.auto_status}</td>
                  <td>{formatScore(s.score, s.max_score)}</td>
                  <td>
                    <ActionButton
                      label="Withdraw"
                      warn
                      disabled={busy}
                      title={`Withdraw submission #${s.id}`}
                      onClick={() => onWithdraw(s)}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
    </article>
  );
}

export function TestTable(props: { rows: ITestRow[] }): JSX.Element {
  return (
    <table className="jp-grader-tests">
      <caption>Tests</caption>
      <thead>
        <tr>
          <th scope="col">Test</th>
          <th scope="col">Points</th>
          <th scope="col">Status</th>
          <th scope="col">Output</th>
        </tr>
      </thead>
      <tbody>
        {props.rows.map(row => (
          <tr key={`${row.notebook}/${row.name}`}>
            <td>{row.name}</td>
            <td>{formatScore(row.points, row.max)}</td>
            <td>{row.status}</td>
            <td>
              <code>{row.message}</code>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
