"""HTTP workers' accepts committed by the dispatcher process's writer over a UNIX
socket (store/remote_writer.py, procs/writer_server.py): in one process here, each
"process" its own Store on one file, the link a real socket on the reactor."""

import os
import pickle
import shutil
import sqlite3
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from gateway.model import NewMessage
from gateway.procs.writer_server import WriterServer
from gateway.store import Store
from gateway.store.interface import DuplicateIdempotencyKey, QuotaRefused, TransactionLost
from gateway.store.remote_writer import RemoteWriter, loads, prefixed
from gateway.store.store import REMOTE_ACCEPTS

NAMES = {operation: name for name, operation in REMOTE_ACCEPTS.items()}


def message(s, agency="tax", parts=1):
    return NewMessage(id=s.new_message_id(), agency=agency, sender="40401234",
                      recipient="989121234567", text="x", priority=0, reference=None,
                      validity_s=3600, receipt=False, data_coding=0, esm_class=0,
                      parts=[b"x"] * parts, created_at=1000.0)


@defer.inlineCallbacks
def until(condition, seconds=10.0):
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("timed out")


class _Silent:
    """A dispatcher's store that never commits (it is about to die)."""

    def accept_named(self, name, item, answer):
        pass                                    # `answer` is never told


class _CommitsThenDies:
    """A dispatcher's store that commits, then its process dies before answering."""

    def __init__(self, real):
        self.real = real
        self.server = None

    def accept_named(self, name, item, answer):
        # Committed (answered from the reactor: a Deferred, not the server's `answer`),
        # then the server stops, and `answer` is never told.
        self.real.accept_named(name, item).addCallback(lambda _: self.server.stop())


def _frames(data):
    """The frames in `data` (bytes as written on the link), read."""
    frames = []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(loads(data[4:4 + length]))
        data = data[4 + length:]
    return frames


class _Holding:
    """A dispatcher's store that commits nothing until told: the answers wait."""

    def __init__(self):
        self.answers = []

    def accept_named(self, name, item, answer):
        self.answers.append((answer, item[2]))


class RemoteAccepts(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="payam-remote-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.db = os.path.join(self.dir, "gateway.db")
        self.sock = os.path.join(self.dir, "writer.sock")
        self.dispatcher = Store(self.db, reactor)
        self.dispatcher.open(create=True)
        self.addCleanup(self.dispatcher.close)
        self.woken = []

    def serve(self, store=None):
        server = WriterServer(self.sock, store or self.dispatcher, reactor,
                              lambda: self.woken.append(1))
        server.start()
        self.addCleanup(server.stop)
        return server

    @defer.inlineCallbacks
    def worker(self, connected=True):
        store = Store(self.db, reactor, claims=False)
        store.open()
        self.addCleanup(store.close)
        remote = RemoteWriter(self.sock, reactor, NAMES, stored_ids=store.stored_ids)
        store.hand_accepts_to(remote)
        remote.start()
        self.addCleanup(remote.stop)
        if connected:
            yield until(lambda: remote.connected)
        return store, remote

    def count(self, sql="SELECT COUNT(*) FROM messages"):
        with sqlite3.connect(self.db) as db:
            return db.execute(sql).fetchone()[0]

    @defer.inlineCallbacks
    def test_an_accept_is_committed_by_the_dispatchers_writer(self):
        self.serve()
        store, remote = yield self.worker()
        local_commits, remote_commits = store.commits, self.dispatcher.commits
        messages = [message(store), message(store, parts=2)]
        ids = yield store.accept(messages)
        assert ids == [m.id for m in messages]
        assert remote.remote == 1 and store.commits == local_commits
        assert self.dispatcher.commits > remote_commits
        assert self.count() == 2 and self.count("SELECT COUNT(*) FROM parts") == 3
        yield until(lambda: self.woken)          # the claim is woken after the commit

    @defer.inlineCallbacks
    def test_the_writer_thread_answers_one_commits_accepts_in_one_frame(self):
        server = self.serve()
        store, remote = yield self.worker()
        frames = []
        answered = remote._answered
        remote._answered = lambda link, data: (frames.append(data),
                                               answered(link, data))
        self.dispatcher.commit_every(0.05)   # the twenty are in one commit (or two)
        ids = yield defer.gatherResults([store.accept([message(store)])
                                         for _ in range(20)])
        assert len(ids) == 20 and remote.remote == 20 and self.count() == 20
        assert len(frames) <= 2, len(frames)
        yield until(lambda: self.woken and all(link.pending == 0
                                               for link in server.links))

    @defer.inlineCallbacks
    def test_a_turns_accepts_go_in_one_frame_closed_at_turn_messages(self):
        from gateway.store import remote_writer
        self.serve()
        store, remote = yield self.worker()
        sent = []
        link = remote._link
        send = link.outbox.send
        link.outbox.send = lambda data: (sent.append(data), send(data))
        turn = [store.accept([message(store)]) for _ in range(5)]   # one reactor turn
        ids = yield defer.gatherResults(turn)
        assert len(ids) == 5 and remote.remote == 5 and self.count() == 5
        frames = _frames(b"".join(sent))
        assert [(seq, kind, len(accepts)) for seq, kind, accepts in frames] == \
            [(None, remote_writer.ACCEPTS, 5)]
        # A frame is closed once it holds TURN_MESSAGES messages; the next one goes on.
        self.patch(remote_writer, "TURN_MESSAGES", 3)
        del sent[:]
        turn = [store.accept([message(store), message(store)]) for _ in range(3)]
        yield defer.gatherResults(turn)
        assert [len(accepts) for _, _, accepts in _frames(b"".join(sent))] == [2, 1]
        assert remote.remote == 8 and self.count() == 11

    @defer.inlineCallbacks
    def test_an_unreadable_frame_of_answers_closes_the_workers_link(self):
        server = self.serve(_Silent())
        store, remote = yield self.worker()
        waiting = store.accept([message(store)])
        yield until(lambda: server.links and remote._waiting)
        link, = server.links
        link.outbox.send(prefixed(pickle.dumps((None, "answers", [1, 2]))))
        yield self.assertFailure(waiting, TransactionLost)   # settled: not stored
        yield until(lambda: not remote._waiting)

    @defer.inlineCallbacks
    def test_two_workers_racing_one_idempotency_key_store_one_message(self):
        self.serve()
        (a, _), (b, _) = (yield self.worker()), (yield self.worker())
        outcomes = yield defer.DeferredList(
            [s.accept([message(s)], idempotency=("tax", "same-key", '{"first": 1}'),
                      quota=("tax", 0.0, 1, 100)) for s in (a, b) * 5],
            consumeErrors=True)
        stored = [value for ok, value in outcomes if ok]
        duplicates = [value for ok, value in outcomes
                      if not ok and value.check(DuplicateIdempotencyKey)]
        assert len(stored) == 1 and len(duplicates) == 9, outcomes
        assert duplicates[0].value.response == '{"first": 1}'
        assert self.count() == 1

    @defer.inlineCallbacks
    def test_quota_across_workers_is_exact(self):
        self.serve()
        (a, _), (b, _) = (yield self.worker()), (yield self.worker())
        outcomes = yield defer.DeferredList(
            [s.accept([message(s)], quota=("tax", 0.0, 1, 7)) for s in (a, b) * 6],
            consumeErrors=True)
        refused = [value for ok, value in outcomes
                   if not ok and value.check(QuotaRefused)]
        assert sum(ok for ok, _ in outcomes) == 7 and len(refused) == 5, outcomes
        assert refused[0].value.quota == 7
        assert self.count() == 7

    @defer.inlineCallbacks
    def test_the_dispatcher_going_away_fails_what_waits_and_accepts_go_on_locally(self):
        server = self.serve(_Silent())
        store, remote = yield self.worker()
        waiting = store.accept([message(store)])
        yield until(lambda: server.links and remote._waiting)
        server.stop()                              # the dispatcher process died
        yield self.assertFailure(waiting, TransactionLost)
        yield until(lambda: not remote.connected)
        # Away: the worker's own writer commits (as before the single writer).
        commits = store.commits
        ids = yield store.accept([message(store)])
        assert store.commits == commits + 1 and self.count() == 1, ids
        # Back (a new dispatcher on the same path): accepts go there again.
        self.serve()
        yield until(lambda: remote.connected)
        yield store.accept([message(store)])
        assert remote.remote == 1 and self.count() == 2

    @defer.inlineCallbacks
    def test_an_accept_the_dispatcher_committed_before_dying_is_answered_stored(self):
        dying = _CommitsThenDies(self.dispatcher)
        dying.server = self.serve(dying)
        store, remote = yield self.worker()
        messages = [message(store), message(store)]
        ids = yield store.accept(messages, quota=("tax", 0.0, 2, 100))
        assert ids == [m.id for m in messages] and remote.remote == 0
        assert self.count() == 2                   # once: not committed again here

    @defer.inlineCallbacks
    def test_without_a_dispatcher_the_worker_commits_its_own(self):
        store, remote = yield self.worker(connected=False)
        yield store.accept([message(store)])
        assert not remote.connected and remote.remote == 0 and self.count() == 1

    @defer.inlineCallbacks
    def test_an_accept_too_big_for_a_frame_is_committed_by_the_worker(self):
        from gateway.store import remote_writer
        self.serve()
        store, remote = yield self.worker()
        self.patch(remote_writer, "MAX_FRAME", 200)
        yield store.accept([message(store, parts=3)])
        assert remote.remote == 0 and self.count() == 1

    def test_a_frame_carries_data_only(self):
        assert loads(pickle.dumps((1, "accept", ([("a", b"x", 1.5, None)], [])))) == \
            (1, "accept", ([("a", b"x", 1.5, None)], []))
        with self.assertRaises(pickle.UnpicklingError):
            loads(pickle.dumps(os.system))

    @defer.inlineCallbacks
    def test_hostile_frames_close_only_their_own_link(self):
        """A peer on the socket sending garbage, a class, the wrong shape or a frame over
        MAX_FRAME loses its link; the server goes on committing a good worker's accepts."""
        import struct
        from twisted.internet.protocol import ClientCreator, Protocol
        from gateway.store import remote_writer
        self.patch(remote_writer.Framed, "MAX_LENGTH", 1000)
        server = self.serve()
        bad = [b"\x80\x05not a pickle", pickle.dumps(os.system), pickle.dumps((1, 2)),
               pickle.dumps([1, 2, 3, 4]), b"x" * 1001,
               pickle.dumps((1, "accept", ([], [], [], None, 0.0, []))),   # not a list
               pickle.dumps((None, "accepts", [(1, 2)])),
               pickle.dumps((None, "accepts", 5)),                       # not a list
               # More accepts than a worker puts in one frame (each holds a message).
               pickle.dumps((None, "accepts", [(n, "accept", None) for n in
                                               range(remote_writer.TURN_MESSAGES + 1)]))]
        assert all(len(payload) <= 1000 for payload in bad[-3:])   # refused, not too long
        for payload in bad:
            peer = yield ClientCreator(reactor, Protocol).connectUNIX(self.sock)
            closed = defer.Deferred()
            peer.connectionLost = lambda reason, d=closed: d.callback(None)
            peer.transport.write(struct.pack("!I", len(payload)) + payload)
            yield closed                        # the server closed it
        yield until(lambda: not server.links)
        store, remote = yield self.worker()
        yield store.accept([message(store)])
        assert remote.remote == 1 and self.count() == 1

    @defer.inlineCallbacks
    def test_frames_read_before_a_pause_are_taken_when_reading_resumes(self):
        """Frames already read when a link pauses (MAX_PENDING) wait in the protocol's
        buffer; once it resumes they are taken without the worker sending more."""
        from gateway.procs import writer_server
        from gateway.store.remote_writer import ACCEPTS, dumps
        self.patch(writer_server, "MAX_PENDING", 2)
        holding = _Holding()
        server = self.serve(holding)
        store, remote = yield self.worker()
        yield until(lambda: server.links)
        link, = server.links
        frames = [prefixed(dumps((None, ACCEPTS, [(n, "accept", (None, None, [f"m{n}"]))
                                                  for n in pair])))
                  for pair in ((1, 2), (3, 4))]
        link.dataReceived(b"".join(frames))      # two frames in one read
        assert len(holding.answers) == 2 and link.paused
        for answer, ids in holding.answers[:2]:
            answer.callback(ids)                 # committed: the link resumes
        yield until(lambda: len(holding.answers) == 4)
        assert link.pending == 2

    # Each end's bytes the other does not read are bounded: past them the dispatcher
    # stops reading that worker's accepts, and a worker commits its own.
    @defer.inlineCallbacks
    def test_a_worker_that_reads_no_answers_is_not_read_until_it_does(self):
        from gateway.procs import writer_server
        server = self.serve()
        store, remote = yield self.worker()
        yield until(lambda: server.links)
        link, = server.links
        remote._link.transport.stopReading()          # the worker reads nothing more
        # Answers for no waiting accept (the worker ignores them), past the bound.
        filler = prefixed(pickle.dumps((10 ** 9, "ok", ["x" * 60_000])))
        while link.outbox.kept <= writer_server.MAX_KEPT:
            link.outbox.send(filler)
        waiting = store.accept([message(store)])        # read and committed, then …
        yield until(lambda: link.paused)                # … the link is read no more
        assert link.outbox.kept > writer_server.MAX_KEPT
        remote._link.transport.startReading()           # it reads again: all drains,
        ids = yield waiting                             # its answer arrives, reading
        assert len(ids) == 1 and self.count() == 1      # resumes
        yield until(lambda: not link.paused and link.outbox.kept == 0)
        more = yield store.accept([message(store)])
        assert len(more) == 1 and remote.remote == 2

    @defer.inlineCallbacks
    def test_a_dispatcher_that_reads_nothing_leaves_the_worker_committing_its_own(self):
        from gateway.store import remote_writer
        server = self.serve()
        store, remote = yield self.worker()
        yield until(lambda: server.links)
        link, = server.links
        link.transport.stopReading()                    # the dispatcher reads nothing
        # Frames the dispatcher does not read pile up on the worker's side, past its
        # bound (8 MiB; 256 KiB here, to be quick), each one still waiting for its answer.
        self.patch(remote_writer, "MAX_KEPT", 256 << 10)
        waiting = []
        while remote._link.outbox.kept <= remote_writer.MAX_KEPT:
            waiting.append(store.accept([message(store, parts=200)]))
            yield task.deferLater(reactor, 0, lambda: None)   # the turn's frames go
            assert len(waiting) < 5_000, "the worker's outbox never filled"
        commits = store.commits
        ids = yield store.accept([message(store)])     # past the bound: committed here
        assert len(ids) == 1 and store.commits > commits
        link.transport.startReading()                  # the dispatcher reads again:
        done = yield defer.gatherResults(waiting)      # every waiting accept answered
        assert len(done) == len(waiting)
        assert self.count() == len(waiting) + 1
