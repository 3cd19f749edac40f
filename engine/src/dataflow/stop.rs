//! Job-wide stop for jobs without checkpoints.
//!
//! `Shared` is per process, so a SIGTERM or a failure in one process of a
//! cluster is not seen by the others by itself. Checkpointed jobs carry it on
//! their control stream ([`Control::Stop`], announced by the function
//! operator); a job without checkpoints has no control stream, so each worker
//! runs this small source instead: once its process begins to stop it
//! broadcasts one [`Control::Stop`], and every worker that receives it stops
//! its process the same way ([`take_peer_stop`]). Without it, one process
//! would drain while the others read on, and the drained one could not finish
//! (its dataflow waits for theirs): a half-running job.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::{ProbeHandle, Scope};
use timely::scheduling::Activator;

use super::checkpointing::{take_peer_stop, Control};
use crate::shared::Shared;

/// How often a worker looks whether its process began to stop.
const POLL: Duration = Duration::from_millis(100);

/// Adds the stop signal to `scope`: announces this process's stop or failure
/// to every worker, and applies theirs to `shared`. It lets go of its
/// capability once it announced, or once `done` (the job's main dataflow)
/// has finished, so it never keeps a finished job alive: the worker loop
/// activates it through the returned activator as soon as `done` is, rather
/// than leaving the finish to its next poll (which would add up to
/// [`POLL`] to every finite job).
pub(crate) fn job_wide_stop<'s>(
    scope: Scope<'s, u64>,
    shared: &Arc<Shared>,
    done: &ProbeHandle<u64>,
) -> Activator {
    let index = scope.index();
    let worker = scope.worker();
    let local = shared.clone();
    let done = done.clone();
    let handle: Rc<RefCell<Option<Activator>>> = Rc::new(RefCell::new(None));
    let slot = handle.clone();
    let signals = source::<_, CapacityContainerBuilder<Vec<Control>>, _, _>(
        scope,
        "Job-wide stop",
        move |cap, info| {
            let activator = worker.activator_for(info.address.clone());
            *slot.borrow_mut() = Some(activator.clone());
            let mut cap = Some(cap);
            move |output| {
                let Some(c) = cap.as_ref() else { return };
                if local.shutting_down() {
                    output.session(c).give(Control::Stop {
                        worker: index,
                        failure: local.failure(),
                    });
                    cap = None;
                } else if done.with_frontier(|f| f.is_empty()) {
                    cap = None;
                } else {
                    activator.activate_after(POLL);
                }
            }
        },
    );
    let shared = shared.clone();
    signals.broadcast().inspect(move |c: &Control| {
        if let Control::Stop { worker, failure } = c {
            take_peer_stop(&shared, *worker, failure.as_deref());
        }
    });
    let activator = handle.borrow_mut().take();
    activator.expect("timely builds a source's operator when it is added")
}
