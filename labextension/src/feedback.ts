/**
 * The feedback page in a Lab tab. Submission output is part of it, so it is shown in an iframe
 * sandboxed with no permission at all (no scripts, an opaque origin): nothing in it runs with the
 * user's Lab credentials. The server extension also sends it with a CSP `sandbox` header.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import { assignmentPath, request } from './api';
import { ISubmission } from './model';

class FeedbackFrame extends Widget {
  constructor(html: string, title: string) {
    super();
    this.addClass('jp-grader-feedback');
    const frame = document.createElement('iframe');
    frame.setAttribute('sandbox', '');
    frame.setAttribute('title', title);
    frame.setAttribute('referrerpolicy', 'no-referrer');
    frame.srcdoc = html;
    this.node.appendChild(frame);
  }
}

export async function openFeedback(
  submission: ISubmission,
  add: (widget: MainAreaWidget) => void
): Promise<void> {
  const html = await request<string>(
    `${assignmentPath(submission.lecture, submission.assignment)}/submissions/${submission.id}/feedback`,
    { method: 'GET' }
  );
  const title = `Feedback: ${submission.assignment} #${submission.id}`;
  const widget = new MainAreaWidget({
    content: new FeedbackFrame(String(html), title)
  });
  widget.id = `grader-feedback-${submission.id}`;
  widget.title.label = title;
  widget.title.closable = true;
  add(widget);
}
