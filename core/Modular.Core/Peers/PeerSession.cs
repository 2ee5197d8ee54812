using System.Net;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Ice;

namespace Modular.Core.Peers;

/// <summary>
/// One peer connection's signal session: this side's credentials and session id, the peer's (from its offer or
/// answer), its candidates and the address its checks came from, and what the peer said about its session
/// (restarted, goodbye). It sends the offer / answer and the session notices (goodbye, go-idle) and takes the peer's
/// signal bodies. Open while the connect loop runs (<see cref="Open"/> / <see cref="End"/>): a closed session drops
/// what arrives and names no session.
/// </summary>
internal sealed class PeerSession
{
    private readonly WgKey _publicKey;
    private readonly Func<string> _name;
    private readonly IPeerSignaling _signaling;
    private readonly IPeerPaths _paths;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action _wake;

    // The owner's state lock (PeerConn._lock), shared so the connection's state and its session change together.
    private readonly Lock _lock;

    // Guarded by _lock.
    private bool _open; // the connect loop runs with this session
    private IceCredentials? _local;
    private ulong _sessionId;
    private ulong? _announcedSession; // the session id in the last offer/answer sent: the one the peer knows
    private IceCredentials? _remote;
    private ulong _remoteSession;
    // The newest seal time (ms) of an offer or answer taken, and its session: an offer or answer of another session
    // sealed before it is an older session of the peer (a replay, or a late delivery) and must not restart this one.
    // Kept across renewals: a replayed old offer must not win after a failed attempt either.
    private long _newestRemoteStamp;
    private ulong? _newestRemoteSession;
    private bool _remoteRestarted; // the peer's offer or answer named a new session of its own
    private bool _remoteLeaving; // the peer said goodbye to this session
    private IReadOnlyList<IceCandidate> _remoteCandidates = [];
    private IPEndPoint? _peerReflexive; // where the peer's valid checks came from
    private bool _peerCheckedDirect; // a valid check of the peer for this session arrived since last taken

    /// <param name="stateLock">The owner's state lock; this session's fields are guarded by it.</param>
    /// <param name="wake">Wakes the owner's connect loop (called outside the lock).</param>
    public PeerSession(WgKey publicKey, Func<string> name, IPeerSignaling signaling, IPeerPaths paths, TimeProvider time, ILogger logger, Lock stateLock, Action wake)
    {
        _publicKey = publicKey;
        _name = name;
        _signaling = signaling;
        _paths = paths;
        _time = time;
        _logger = logger;
        _lock = stateLock;
        _wake = wake;
    }

    /// <summary>Opens with a new session (fresh credentials and id, no remote ones). Call under the owner's lock.</summary>
    public void Open()
    {
        _remoteRestarted = false;
        _remoteLeaving = false;
        RenewLocked();
        _open = true;
    }

    /// <summary>The connect loop stopped: the session names nothing until it opens again. Call under the owner's lock.</summary>
    public void End() => _open = false;

    /// <summary>Parked: no credentials either way until the next open.</summary>
    public void Forget()
    {
        lock (_lock)
        {
            _local = null;
            _remote = null;
        }
    }

    /// <summary>New credentials and session id, and no remote ones yet (a failed attempt starts over).</summary>
    public void Renew()
    {
        lock (_lock)
        {
            RenewLocked();
        }
    }

    /// <summary>Starts an attempt: forgets what the peer said about the last one; returns this side's credentials.</summary>
    public IceCredentials BeginAttempt()
    {
        lock (_lock)
        {
            _remoteRestarted = false;
            _remoteLeaving = false;
            _peerCheckedDirect = false;
            return _local!;
        }
    }

    /// <summary>The peer's credentials; null until its offer or answer arrived.</summary>
    public IceCredentials? Remote
    {
        get
        {
            lock (_lock)
            {
                return _remote;
            }
        }
    }

    /// <summary>The peer restarted its session since this attempt began.</summary>
    public bool RemoteRestarted
    {
        get
        {
            lock (_lock)
            {
                return _remoteRestarted;
            }
        }
    }

    /// <summary>The peer said goodbye to this session since this attempt began.</summary>
    public bool RemoteLeaving
    {
        get
        {
            lock (_lock)
            {
                return _remoteLeaving;
            }
        }
    }

    /// <summary>True when <paramref name="sessionId"/> names the peer's session this connection negotiated (not an older one).</summary>
    public bool IsCurrentRemoteSession(ulong sessionId)
    {
        lock (_lock)
        {
            return _open && _remote is not null && sessionId == _remoteSession;
        }
    }

    /// <summary>
    /// Takes a verified offer or answer from the peer; answers an offer. One of another session than the newest taken,
    /// sealed before it, is an older session's (a replay or a late delivery) and is dropped: it must not restart the
    /// session in use. A goodbye goes to <see cref="OnGoodbye"/>.
    /// </summary>
    public async Task OnCredentialsAsync(SignalBody body, CancellationToken cancellationToken)
    {
        if (!IceCredentials.IsWellFormed(body.Ufrag, body.Pwd))
        {
            _logger.LogWarning("Peer {Peer}: dropped a signal {Type} with malformed credentials", _name(), body.Type);
            return;
        }

        var candidates = new List<IceCandidate>();
        foreach (var text in body.Candidates.Take(32))
        {
            if (IceCandidate.TryParse(text, out var candidate))
            {
                candidates.Add(candidate);
            }
        }

        bool answer;
        lock (_lock)
        {
            if (!_open || _local is null)
            {
                return; // Closed: the peer will offer again when we open.
            }

            if (_newestRemoteSession is { } newest && body.SessionId != newest && body.TimestampUnixMs < _newestRemoteStamp)
            {
                _logger.LogDebug("Peer {Peer}: dropped a signal {Type} of an older session of the peer (replayed or late)", _name(), body.Type);
                return;
            }

            _newestRemoteSession = body.SessionId;
            _newestRemoteStamp = Math.Max(_newestRemoteStamp, body.TimestampUnixMs);
            var newSession = _remote is not null && body.SessionId != _remoteSession;
            _remote = new IceCredentials(body.Ufrag, body.Pwd);
            _remoteSession = body.SessionId;
            _remoteCandidates = candidates;
            _remoteRestarted |= newSession;
            answer = body.Type == SignalBody.Types.Type.Offer;
        }

        _wake();
        if (answer)
        {
            await SendCredentialsAsync(SignalBody.Types.Type.Answer, cancellationToken);
        }
    }

    /// <summary>
    /// The peer says goodbye (it is stopping). Only a goodbye to the session this side negotiated counts: one from an
    /// older session of the peer, or one that arrives while closed here, is dropped. The connect loop, woken, reconnects.
    /// </summary>
    public void OnGoodbye(ulong sessionId)
    {
        lock (_lock)
        {
            if (!_open || _remote is null || sessionId != _remoteSession)
            {
                return; // closed here, or a goodbye from an older session of the peer
            }

            _remoteLeaving = true;
        }

        _wake();
    }

    /// <summary>A notice that names this side's session (goodbye, go-idle); null while none is negotiated.</summary>
    public SignalBody? Notice(SignalBody.Types.Type type)
    {
        lock (_lock)
        {
            // After a failed attempt the session is renewed before the next offer goes out; a notice sent in between
            // must name the session the peer was told about, or the peer drops it as unknown and keeps a dead path.
            return !_open || _local is null ? null : new SignalBody { Type = type, SessionId = _announcedSession ?? _sessionId, TimestampUnixMs = Now() };
        }
    }

    /// <summary>
    /// Tells the peer this side goes idle (GO_IDLE with this session's id), best effort and bounded by
    /// <paramref name="timeout"/> on the injected clock; nothing when no session is negotiated.
    /// </summary>
    public async Task SendGoIdleAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (Notice(SignalBody.Types.Type.GoIdle) is not { } notice)
        {
            return;
        }

        using var bounded = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, bounded.Token);
        try
        {
            await _signaling.SendAsync(_publicKey, notice, linked.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException or Grpc.Core.RpcException)
        {
            _logger.LogDebug("Peer {Peer}: GO_IDLE not sent: {Problem}", _name(), e.Message);
        }
    }

    /// <summary>Sends this side's credentials and candidates (an offer or an answer); nothing while parked.</summary>
    public async Task SendCredentialsAsync(SignalBody.Types.Type type, CancellationToken cancellationToken)
    {
        SignalBody body;
        lock (_lock)
        {
            if (_local is null)
            {
                return;
            }

            body = new SignalBody { Type = type, Ufrag = _local.Ufrag, Pwd = _local.Password, SessionId = _sessionId, TimestampUnixMs = Now() };
            _announcedSession = _sessionId;
        }

        body.Candidates.AddRange(_paths.LocalCandidates.Select(c => c.ToString()));
        await _signaling.SendAsync(_publicKey, body, cancellationToken);
    }

    /// <summary>
    /// A check that passed on this side's credentials (see <see cref="IPeerPaths.Register"/>). Only the peer holds them,
    /// so it is the peer's check for this session (unless it names another session of the peer): proof the peer reaches
    /// this side directly. The connect loop is woken: a relayed side tries the direct path at once (see
    /// <see cref="TakePeerCheckedDirect"/>), so both sides end on one path.
    /// </summary>
    public void OnValidCheck(IPEndPoint from, string senderUfrag)
    {
        lock (_lock)
        {
            if (_remote is not null && !string.Equals(_remote.Ufrag, senderUfrag, StringComparison.Ordinal))
            {
                return; // an older session of the peer
            }

            _peerReflexive = from;
            _peerCheckedDirect = true;
        }

        _wake();
    }

    /// <summary>True once per valid check of the peer for this session (see <see cref="OnValidCheck"/>) since last asked.</summary>
    public bool TakePeerCheckedDirect()
    {
        lock (_lock)
        {
            var taken = _peerCheckedDirect;
            _peerCheckedDirect = false;
            return taken;
        }
    }

    /// <summary>Both sides' credentials and where to check: the peer's candidates (host first) and the address its checks came from.</summary>
    public (IceCredentials Local, IceCredentials Remote, List<IPEndPoint> Targets) CheckTargets()
    {
        lock (_lock)
        {
            List<IPEndPoint> targets = [.. _remoteCandidates.OrderBy(c => c.Type).Select(c => c.Endpoint)];
            if (_peerReflexive is { } reflexive && !targets.Contains(reflexive))
            {
                targets.Add(reflexive);
            }

            return (_local!, _remote!, targets);
        }
    }

    /// <summary>The peer's candidate at <paramref name="endpoint"/>, or a peer-reflexive one when it sent none there.</summary>
    public IceCandidate RemoteCandidateAt(IPEndPoint endpoint)
    {
        lock (_lock)
        {
            return _remoteCandidates.FirstOrDefault(c => c.Endpoint.Equals(endpoint)) ?? new IceCandidate(CandidateType.PeerReflexive, endpoint);
        }
    }

    // Bodies are stamped here, on the connection's clock, so the peer can tell an older session's offer from a newer one.
    private long Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private void RenewLocked()
    {
        _local = IceCredentials.Generate();
        _sessionId = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
        _remote = null;
        _remoteCandidates = [];
        _peerReflexive = null;
        _peerCheckedDirect = false;
    }
}
