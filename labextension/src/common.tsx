/** Small React pieces shared by the student and instructor views. */
import React, { useEffect, useState } from 'react';

/** The current time, re-rendering every `ms` (the countdowns). */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), ms);
    return () => window.clearInterval(timer);
  }, [ms]);
  return now;
}

/** A refusal or failure, in words, announced to screen readers. */
export function ErrorMessage(props: { message: string | null }): JSX.Element | null {
  if (!props.message) {
    return null;
  }
  return (
    <div className="jp-grader-error" role="alert">
      {props.message}
    </div>
  );
}

export function ActionButton(props: {
  label: string;
  onClick: () => void;
  disabled?: boolean;
  title?: string;
  accept?: boolean;
  warn?: boolean;
  describedBy?: string;
}): JSX.Element {
  const mod = props.accept ? ' jp-mod-accept' : props.warn ? ' jp-mod-warn' : ' jp-mod-reject';
  return (
    <button
      type="button"
      className={'jp-Button jp-mod-styled jp-grader-button' + mod}
      onClick={props.onClick}
      disabled={props.disabled}
      title={props.title}
      aria-describedby={props.describedBy}
    >
      {props.label}
    </button>
  );
}

export function formatTime(value: string | null | undefined): string {
  if (!value) {
    return '—';
  }
  const t = new Date(value);
  return Number.isNaN(t.getTime()) ? value : t.toLocaleString();
}
