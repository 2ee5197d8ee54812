using System.Threading.Channels;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;

namespace Modular.Server.Management;

/// <summary>
/// At most one live stream per peer key for one kind of stream (<typeparamref name="TService"/>: Sync or signal).
/// A new stream from the same agent process (same instance id: a reconnect whose old stream the server has not
/// seen end yet) replaces the older one. A new stream from another process while one is live is a second agent
/// with the same identity (a cloned state_dir): it is refused with AlreadyExists and the live one is told
/// (<see cref="Session.Conflicts"/>). The live one wins because it is the one its peers hold tunnels with: a
/// copy booting somewhere must not silently take the identity over. A stream that really died is reaped by the
/// HTTP/2 keepalive (<see cref="Hosting.ServerHost"/>), after which the other agent gets in on its next retry.
/// </summary>
public sealed class PeerSessions<TService>
{
    private readonly Lock _lock = new();
    private readonly Dictionary<WgKey, Session> _sessions = [];
    private readonly TimeProvider _time;

    public PeerSessions(TimeProvider time) => _time = time;

    /// <summary>Live sessions.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _sessions.Count;
            }
        }
    }

    /// <summary>Opens the session of one stream; dispose it when the stream ends.</summary>
    /// <param name="instanceId">The agent process's random id (empty from agents that predate it: one instance).</param>
    /// <param name="remote">Where the stream comes from, as gRPC names it (for the messages).</param>
    /// <param name="callToken">The call's token: the session's <see cref="Session.Token"/> follows it.</param>
    /// <exception cref="RpcException">AlreadyExists: another agent process holds a live session for this key.</exception>
    public Session Open(WgKey key, string instanceId, string remote, CancellationToken callToken)
    {
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            if (_sessions.TryGetValue(key, out var older))
            {
                RefuseAnother(older, instanceId, remote, now);
                older.Supersede();
            }

            var session = new Session(this, key, instanceId, remote, now, callToken);
            _sessions[key] = session;
            return session;
        }
    }

    /// <summary>
    /// Refuses a request (a login) from another agent process while one holds a live session for the key, as
    /// <see cref="Open"/> refuses its stream: a copy of an agent must not change the connected one's metadata either.
    /// </summary>
    /// <exception cref="RpcException">AlreadyExists.</exception>
    public void RefuseIfHeldByAnother(WgKey key, string instanceId, string remote)
    {
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            if (_sessions.TryGetValue(key, out var held))
            {
                RefuseAnother(held, instanceId, remote, now);
            }
        }
    }

    // Another process's attempt while `held` is live: tell the holder, refuse the newcomer. Same process: nothing.
    private static void RefuseAnother(Session held, string instanceId, string remote, DateTimeOffset now)
    {
        if (held.InstanceId == instanceId)
        {
            return;
        }

        held.Tell(new IdentityConflict
        {
            Detail = $"another agent with this identity connected from {remote} and was refused; is a copy of this machine (same state_dir) running?",
            RemoteAddress = remote,
            AtUnix = now.ToUnixTimeSeconds(),
        });
        throw new RpcException(new Status(
            StatusCode.AlreadyExists,
            $"another agent with this identity is connected (since {held.Since:yyyy-MM-dd HH:mm:ss}Z, from {held.Remote}); "
            + "two agents cannot share one key: is this machine a copy of another (same state_dir)? Give it its own state_dir and a setup key"));
    }

    private void Close(Session session)
    {
        lock (_lock)
        {
            if (_sessions.TryGetValue(session.Key, out var current) && ReferenceEquals(current, session))
            {
                _sessions.Remove(session.Key);
            }
        }
    }

    /// <summary>One stream's hold on its key.</summary>
    public sealed class Session : IDisposable
    {
        private readonly PeerSessions<TService> _owner;
        private readonly CancellationTokenSource _stop;
        private readonly Channel<IdentityConflict> _conflicts = Channel.CreateBounded<IdentityConflict>(
            new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });

        internal Session(PeerSessions<TService> owner, WgKey key, string instanceId, string remote, DateTimeOffset since, CancellationToken callToken)
        {
            _owner = owner;
            Key = key;
            InstanceId = instanceId;
            Remote = remote;
            Since = since;
            _stop = CancellationTokenSource.CreateLinkedTokenSource(callToken);
        }

        public WgKey Key { get; }

        public string InstanceId { get; }

        public string Remote { get; }

        public DateTimeOffset Since { get; }

        /// <summary>Cancelled when the call ends or a newer stream of the same agent replaced this one.</summary>
        public CancellationToken Token => _stop.Token;

        /// <summary>A newer stream of the same agent took this one's place.</summary>
        public bool Superseded { get; private set; }

        /// <summary>Refused attempts of another agent with this key (only the newest waits).</summary>
        public ChannelReader<IdentityConflict> Conflicts => _conflicts.Reader;

        internal void Tell(IdentityConflict conflict) => _conflicts.Writer.TryWrite(conflict);

        internal void Supersede()
        {
            Superseded = true;
            _stop.Cancel();
        }

        public void Dispose()
        {
            _owner.Close(this);
            _stop.Dispose();
        }
    }
}
