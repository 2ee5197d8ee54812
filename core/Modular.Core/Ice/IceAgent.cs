using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Modular.Control.Stun;

namespace Modular.Core.Ice;

/// <summary>A check that got a verified answer: the path works and took <paramref name="RoundTrip"/>.</summary>
public readonly record struct CheckResult(IPEndPoint Remote, TimeSpan RoundTrip);

/// <summary>
/// The ICE layer shared by every peer connection of one interface: answers verified connectivity
/// checks for the local credentials registered with it, runs checks towards remote candidates,
/// and asks a STUN server for this port's mapped (server-reflexive) address — all over one
/// <see cref="IIceTransport"/>, so the checks take WireGuard's own path. Forged, stale or unknown
/// checks are counted and dropped; nothing here throws on bad input.
/// </summary>
public sealed class IceAgent : IStunReceiver
{
    private readonly IIceTransport _transport;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, Registration> _sessions = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<UInt128, Pending> _pending = new();
    private long _dropped;

    public IceAgent(IIceTransport transport, TimeProvider time, ILogger logger)
    {
        _transport = transport;
        _time = time;
        _logger = logger;
        transport.SetReceiver(this);
    }

    /// <summary>Datagrams dropped: malformed, unknown session, failed integrity, or unsolicited.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    public int LocalPort => _transport.LocalPort;

    /// <summary>
    /// Answers checks addressed to <paramref name="local"/> from then on; <paramref name="onValidCheck"/>
    /// hears where each verified check came from (a peer-reflexive address). Dispose to stop answering.
    /// </summary>
    public IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck)
    {
        var registration = new Registration(this, local, onValidCheck);
        _sessions[local.Ufrag] = registration;
        return registration;
    }

    /// <summary>
    /// Sends checks to <paramref name="remote"/> (every <paramref name="interval"/>) until one is
    /// answered with a valid response or <paramref name="timeout"/> passes; null on timeout.
    /// </summary>
    public async Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken)
    {
        var username = $"{remoteCredentials.Ufrag}:{local.Ufrag}";
        var deadline = _time.GetTimestamp();
        var buffer = new byte[IceCheckMessage.MaxSize];
        while (_time.GetElapsedTime(deadline) < timeout)
        {
            var (id, pending) = NewPending(remoteCredentials.Password, remote);
            try
            {
                var length = IceCheckMessage.Write(buffer, IceCheckMessage.BindingRequest, TransactionBytes(id), username, remoteCredentials.Password);
                var sent = _time.GetTimestamp();
                _transport.Send(buffer.AsSpan(0, length), remote);
                var answered = await WaitAsync(pending.Completion.Task, interval, cancellationToken);
                if (answered is not null)
                {
                    return new CheckResult(remote, _time.GetElapsedTime(sent));
                }
            }
            finally
            {
                _pending.TryRemove(id, out _);
            }
        }

        return null;
    }

    /// <summary>Asks <paramref name="server"/> which address it sees our port as; null when it does not answer.</summary>
    public async Task<IPEndPoint?> QueryStunAsync(IPEndPoint server, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var buffer = new byte[StunMessage.HeaderSize];
        var started = _time.GetTimestamp();
        while (_time.GetElapsedTime(started) < timeout)
        {
            var (id, pending) = NewPending(null, server);
            try
            {
                StunMessage.WriteBindingRequest(buffer, TransactionBytes(id));
                _transport.Send(buffer, server);
                var mapped = await WaitAsync(pending.Completion.Task, TimeSpan.FromMilliseconds(500), cancellationToken);
                if (mapped is not null)
                {
                    return mapped;
                }
            }
            finally
            {
                _pending.TryRemove(id, out _);
            }
        }

        return null;
    }

    public void OnStun(ReadOnlySpan<byte> datagram, IPEndPoint from)
    {
        if (datagram.Length < PacketClassifier.StunHeaderSize)
        {
            Drop();
            return;
        }

        var id = IdOf(datagram.Slice(8, IceCheckMessage.TransactionIdSize));
        if (IceCheckMessage.TryRead(datagram, out var type, out _, out var username))
        {
            if (type == IceCheckMessage.BindingRequest)
            {
                AnswerCheck(datagram, username, from);
                return;
            }

            if (_pending.TryGetValue(id, out var pending) && pending.Password is { } password
                && pending.Remote.Equals(from) && IceCheckMessage.Verify(datagram, password))
            {
                pending.Completion.TrySetResult(from);
                return;
            }

            Drop();
            return;
        }

        // A STUN server's Binding Success (no integrity: it only tells us our mapping).
        if (_pending.TryGetValue(id, out var query) && query.Password is null && query.Remote.Equals(from)
            && StunMessage.TryReadBindingSuccess(datagram, datagram.Slice(8, IceCheckMessage.TransactionIdSize), out var mapped) && mapped is not null)
        {
            query.Completion.TrySetResult(mapped);
            return;
        }

        Drop();
    }

    private void AnswerCheck(ReadOnlySpan<byte> datagram, ReadOnlySpan<byte> username, IPEndPoint from)
    {
        if (!IceCheckMessage.TrySplitUsername(username, out var recipient, out var sender)
            || !_sessions.TryGetValue(Encoding.ASCII.GetString(recipient), out var session)
            || !IceCheckMessage.Verify(datagram, session.Local.Password))
        {
            Drop();
            return;
        }

        Span<byte> response = stackalloc byte[IceCheckMessage.MaxSize];
        var senderUfrag = Encoding.ASCII.GetString(sender);
        var length = IceCheckMessage.Write(response, IceCheckMessage.BindingSuccess, datagram.Slice(8, IceCheckMessage.TransactionIdSize), Encoding.ASCII.GetString(username), session.Local.Password);
        _transport.Send(response[..length], from);
        try
        {
            session.OnValidCheck(from, senderUfrag);
        }
#pragma warning disable CA1031 // A listener's bug must not break answering checks for everyone else.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogWarning(e, "A check listener failed");
        }
    }

    private void Drop() => Interlocked.Increment(ref _dropped);

    private (UInt128 Id, Pending Pending) NewPending(string? password, IPEndPoint remote)
    {
        Span<byte> bytes = stackalloc byte[IceCheckMessage.TransactionIdSize];
        while (true)
        {
            RandomNumberGenerator.Fill(bytes);
            var id = IdOf(bytes);
            var pending = new Pending(password, remote, new TaskCompletionSource<IPEndPoint>(TaskCreationOptions.RunContinuationsAsynchronously));
            if (_pending.TryAdd(id, pending))
            {
                return (id, pending);
            }
        }
    }

    private async Task<IPEndPoint?> WaitAsync(Task<IPEndPoint> completion, TimeSpan wait, CancellationToken cancellationToken)
    {
        try
        {
            return await completion.WaitAsync(wait, _time, cancellationToken);
        }
        catch (TimeoutException)
        {
            return null;
        }
    }

    private static UInt128 IdOf(ReadOnlySpan<byte> transactionId)
    {
        Span<byte> bytes = stackalloc byte[16];
        bytes.Clear();
        transactionId.CopyTo(bytes[4..]);
        return BinaryPrimitives.ReadUInt128BigEndian(bytes);
    }

    private static byte[] TransactionBytes(UInt128 id)
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, id);
        return bytes[4..].ToArray();
    }

    private sealed record Pending(string? Password, IPEndPoint Remote, TaskCompletionSource<IPEndPoint> Completion);

    private sealed class Registration(IceAgent owner, IceCredentials local, Action<IPEndPoint, string> onValidCheck) : IDisposable
    {
        public IceCredentials Local { get; } = local;

        public Action<IPEndPoint, string> OnValidCheck { get; } = onValidCheck;

        public void Dispose() => owner._sessions.TryRemove(new KeyValuePair<string, Registration>(Local.Ufrag, this));
    }
}
