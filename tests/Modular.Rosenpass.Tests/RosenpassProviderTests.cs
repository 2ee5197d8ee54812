using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.Rosenpass;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// The provider's decision for every case of the matrix, and the exchange's keys replacing the seed PSK, with an
/// in-memory fake of the protocol (<see cref="FakeExchange"/>) over an in-memory network.
/// </summary>
public sealed class RosenpassProviderTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private static readonly WgKey Small = Key(0x01);
    private static readonly WgKey Large = Key(0x02);
    private static readonly WgKey AccountPsk = Key(0x55);

    [Fact]
    public async Task Strict_refuses_a_peer_without_Rosenpass_and_says_why()
    {
        await using var provider = new RosenpassProvider(null, null, null, TimeProvider.System, NullLogger.Instance);
        var decision = await provider.GetPresharedKeyAsync(Peer(Large, Small, fingerprint: null, permissive: false, AccountPsk), CancellationToken.None);
        Assert.False(decision.Allowed);
        Assert.Contains("does not run Rosenpass", decision.Reason, StringComparison.Ordinal);
        Assert.Null(decision.PresharedKey);
    }

    [Fact]
    public async Task Permissive_gives_a_peer_without_Rosenpass_the_account_psk_or_none()
    {
        await using var provider = new RosenpassProvider(null, null, null, TimeProvider.System, NullLogger.Instance);
        var withPsk = await provider.GetPresharedKeyAsync(Peer(Large, Small, fingerprint: null, permissive: true, AccountPsk), CancellationToken.None);
        var without = await provider.GetPresharedKeyAsync(Peer(Large, Small, fingerprint: null, permissive: true, null), CancellationToken.None);
        Assert.True(withPsk.Allowed);
        Assert.Equal(AccountPsk, withPsk.PresharedKey);
        Assert.Null(withPsk.QuantumResistantSince);
        Assert.True(without.Allowed);
        Assert.Null(without.PresharedKey);
    }

    [Fact]
    public async Task Two_Rosenpass_peers_start_on_the_same_seed_which_mixes_in_the_account_psk()
    {
        await using var a = new RosenpassProvider(null, null, null, TimeProvider.System, NullLogger.Instance);
        await using var b = new RosenpassProvider(null, null, null, TimeProvider.System, NullLogger.Instance);
        var atA = await a.GetPresharedKeyAsync(Peer(Small, Large, "aa", permissive: false, AccountPsk), CancellationToken.None);
        var atB = await b.GetPresharedKeyAsync(Peer(Large, Small, "bb", permissive: false, AccountPsk), CancellationToken.None);
        var noAccount = await b.GetPresharedKeyAsync(Peer(Large, Small, "bb", permissive: false, null), CancellationToken.None);

        Assert.True(atA.Allowed);
        Assert.NotNull(atA.PresharedKey);
        Assert.Equal(atA.PresharedKey, atB.PresharedKey);
        Assert.NotEqual(AccountPsk, atA.PresharedKey);
        Assert.NotEqual(atA.PresharedKey, noAccount.PresharedKey);
        Assert.Null(atA.QuantumResistantSince); // a seed is not post-quantum
    }

    [Fact]
    public async Task The_exchange_key_replaces_the_seed_on_both_sides_and_only_the_larger_key_initiates()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-06T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var pair = new Pair(time);
        var seed = SeedKeys.Seed(Small, Large, AccountPsk);

        var first = await pair.AtSmall();
        Assert.Equal(seed, first.PresharedKey);
        await pair.AtLarge();

        await pair.SmallChanged.Task.WaitAsync(Patience);
        await pair.LargeChanged.Task.WaitAsync(Patience);
        var atSmall = await pair.AtSmall();
        var atLarge = await pair.AtLarge();

        Assert.True(atSmall.Allowed);
        Assert.NotEqual(seed, atSmall.PresharedKey);
        Assert.Equal(atSmall.PresharedKey, atLarge.PresharedKey);
        Assert.Equal(time.GetUtcNow(), atSmall.QuantumResistantSince);
        Assert.Equal(time.GetUtcNow(), atLarge.QuantumResistantSince);
        Assert.Equal(0, pair.SmallExchange.Initiations);
        Assert.Equal(1, pair.LargeExchange.Initiations);
        Assert.True(pair.Small.TrafficBytes(Large) > 0); // reported for the inactivity allowance
    }

    [Fact]
    public async Task An_expired_key_is_ratcheted_forward_never_reused_and_stays_quantum_resistant()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-06T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var pair = new Pair(time);
        await pair.AtSmall();
        await pair.AtLarge();
        await pair.LargeChanged.Task.WaitAsync(Patience);
        var exchanged = await pair.AtLarge();

        var ratcheted = pair.NextLargeChange();
        pair.LargeExchange.ExpireAll();
        time.Advance(TimeSpan.FromHours(1)); // the fake's timer asked to sleep an hour
        pair.Large.Wake(); // in case the loop had not started that sleep yet
        await ratcheted.WaitAsync(Patience);
        var after = await pair.AtLarge();

        Assert.Equal(SeedKeys.Ratchet(exchanged.PresharedKey!.Value), after.PresharedKey);
        Assert.NotEqual(exchanged.PresharedKey, after.PresharedKey);
        Assert.Equal(exchanged.QuantumResistantSince, after.QuantumResistantSince);
    }

    [Fact]
    public async Task A_rejected_message_is_dropped_and_the_exchange_still_completes()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-06T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var pair = new Pair(time);
        await pair.Network.SendAsync(new byte[] { 0xff, 1, 2 }, Pair.LargeEndpoint, Pair.SmallEndpoint); // garbage first
        await pair.AtSmall();
        await pair.AtLarge();
        await pair.SmallChanged.Task.WaitAsync(Patience);
        Assert.Equal(1, pair.SmallExchange.Rejected);
        Assert.NotNull((await pair.AtSmall()).QuantumResistantSince);
    }

    [Fact]
    public async Task A_peer_gone_idle_or_out_of_the_map_is_forgotten_and_starts_over_on_the_seed()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-06T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var pair = new Pair(time);
        await pair.AtSmall();
        await pair.AtLarge();
        await pair.SmallChanged.Task.WaitAsync(Patience);
        Assert.NotNull((await pair.AtSmall()).QuantumResistantSince);

        pair.Small.PeerInactive(Large);

        Assert.False(pair.Small.Knows(Large)); // no exchange state left: nothing runs for it
        Assert.Equal(0, pair.Small.TrafficBytes(Large));
        Assert.Equal(0, pair.SmallExchange.PeerCount);
        var again = await pair.AtSmall(); // back (woken, or in the map again): starts over
        Assert.Equal(SeedKeys.Seed(Small, Large, AccountPsk), again.PresharedKey);
        Assert.Null(again.QuantumResistantSince);
        Assert.True(pair.Small.Knows(Large));
    }

    private static WgKey Key(byte first)
    {
        var bytes = new byte[WgKey.Size];
        bytes[0] = first;
        bytes[31] = 7;
        return new WgKey(bytes);
    }

    private static PskPeer Peer(WgKey local, WgKey remote, string? fingerprint, bool permissive, WgKey? accountPsk, string? address = null)
        => new(remote, "peer", fingerprint, address) { LocalPublicKey = local, AccountPresharedKey = accountPsk, Permissive = permissive };

    /// <summary>Two providers with fake exchanges on one in-memory network; each knows the other's key through a fake directory.</summary>
    private sealed class Pair : IAsyncDisposable
    {
        public static readonly IPEndPoint SmallEndpoint = IPEndPoint.Parse("100.64.0.1:9999");
        public static readonly IPEndPoint LargeEndpoint = IPEndPoint.Parse("100.64.0.2:9999");
        private static readonly byte[] SmallStatic = RandomNumberGenerator.GetBytes(FakeExchange.KeySize);
        private static readonly byte[] LargeStatic = RandomNumberGenerator.GetBytes(FakeExchange.KeySize);
        private static readonly string SmallFingerprint = Convert.ToHexStringLower(SHA256.HashData(SmallStatic));
        private static readonly string LargeFingerprint = Convert.ToHexStringLower(SHA256.HashData(LargeStatic));

        private TaskCompletionSource _nextLarge = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Pair(TimeProvider time)
        {
            var directory = new FakeDirectory(new() { [SmallFingerprint] = SmallStatic, [LargeFingerprint] = LargeStatic });
            SmallExchange = new FakeExchange(SmallStatic);
            LargeExchange = new FakeExchange(LargeStatic);
            Small = new RosenpassProvider(SmallExchange, Network.Bind(SmallEndpoint), directory, time, NullLogger.Instance);
            Large = new RosenpassProvider(LargeExchange, Network.Bind(LargeEndpoint), directory, time, NullLogger.Instance);
            Small.KeyChanged += (_, peer) => { if (peer == Pair.LargeKey) { SmallChanged.TrySetResult(); } };
            Large.KeyChanged += (_, peer) =>
            {
                if (peer == Pair.SmallKey)
                {
                    var done = Interlocked.Exchange(ref _nextLarge, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
                    LargeChanged.TrySetResult();
                    done.TrySetResult();
                }
            };
            Small.Start();
            Large.Start();
        }

        private static WgKey SmallKey => RosenpassProviderTests.Small;

        private static WgKey LargeKey => RosenpassProviderTests.Large;

        public MemoryNetwork Network { get; } = new();

        public FakeExchange SmallExchange { get; }

        public FakeExchange LargeExchange { get; }

        public RosenpassProvider Small { get; }

        public RosenpassProvider Large { get; }

        public TaskCompletionSource SmallChanged { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource LargeChanged { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes at the large side's next key change after this call.</summary>
        public Task NextLargeChange() => Volatile.Read(ref _nextLarge).Task;

        public async Task<PskDecision> AtSmall()
            => await Small.GetPresharedKeyAsync(Peer(SmallKey, LargeKey, LargeFingerprint, false, AccountPsk, LargeEndpoint.ToString()), CancellationToken.None);

        public async Task<PskDecision> AtLarge()
            => await Large.GetPresharedKeyAsync(Peer(LargeKey, SmallKey, SmallFingerprint, false, AccountPsk, SmallEndpoint.ToString()), CancellationToken.None);

        public async ValueTask DisposeAsync()
        {
            await Small.DisposeAsync();
            await Large.DisposeAsync();
        }
    }

    private sealed class FakeDirectory(Dictionary<string, byte[]> keys) : IRosenpassKeyDirectory
    {
        public ValueTask PublishAsync(ReadOnlyMemory<byte> publicKey, ReadOnlyMemory<byte> fingerprint, string address, CancellationToken cancellationToken)
            => ValueTask.CompletedTask;

        public ValueTask<byte[]?> GetAsync(ReadOnlyMemory<byte> fingerprint, CancellationToken cancellationToken)
            => ValueTask.FromResult(keys.GetValueOrDefault(Convert.ToHexStringLower(fingerprint.Span)));
    }

    /// <summary>Datagrams between in-memory transports, by endpoint.</summary>
    internal sealed class MemoryNetwork
    {
        private readonly ConcurrentDictionary<IPEndPoint, Channel<(byte[] Data, IPEndPoint From)>> _inboxes = new();

        public IRosenpassTransport Bind(IPEndPoint endpoint)
        {
            var inbox = _inboxes.GetOrAdd(endpoint, _ => Channel.CreateUnbounded<(byte[], IPEndPoint)>());
            return new Transport(this, endpoint, inbox);
        }

        public ValueTask SendAsync(byte[] data, IPEndPoint from, IPEndPoint to)
            => _inboxes.TryGetValue(to, out var inbox) ? inbox.Writer.WriteAsync((data, from)) : ValueTask.CompletedTask;

        private sealed class Transport(MemoryNetwork network, IPEndPoint self, Channel<(byte[] Data, IPEndPoint From)> inbox) : IRosenpassTransport
        {
            public ValueTask SendAsync(ReadOnlyMemory<byte> datagram, IPEndPoint to, CancellationToken cancellationToken)
                => network.SendAsync(datagram.ToArray(), self, to);

            public async ValueTask<(int Length, IPEndPoint From)> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
            {
                var (data, from) = await inbox.Reader.ReadAsync(cancellationToken);
                data.CopyTo(buffer);
                return (data.Length, from);
            }

            public void Dispose() => inbox.Writer.TryComplete();
        }
    }

    /// <summary>
    /// Stands in for the protocol: an initiation carries the initiator's static key and a random nonce, the response
    /// echoes the nonce, and both sides' output key is a hash of it. Wants an initiation for every peer it has not
    /// initiated with; throws on anything else (as the real one rejects a bad message).
    /// </summary>
    internal sealed class FakeExchange(byte[] ownStatic) : IKeyExchange
    {
        public const int KeySize = 16;
        private readonly Dictionary<int, byte[]> _peers = [];
        private readonly Dictionary<int, byte[]> _keys = [];
        private readonly HashSet<int> _initiated = [];
        private readonly HashSet<int> _expired = [];
        private int _next;
        private int _initiations;
        private int _rejected;

        public int Initiations => Volatile.Read(ref _initiations);

        public int Rejected => Volatile.Read(ref _rejected);

        /// <summary>The peers added and not removed.</summary>
        public int PeerCount
        {
            get
            {
                lock (_peers)
                {
                    return _peers.Count;
                }
            }
        }

        /// <summary>The next polls report every key as expired (once each).</summary>
        public void ExpireAll()
        {
            lock (_peers)
            {
                _expired.UnionWith(_keys.Keys);
            }
        }

        public int AddPeer(byte[] peerPublicKey, byte[]? presharedKey)
        {
            lock (_peers)
            {
                _peers[++_next] = peerPublicKey;
                return _next;
            }
        }

        public void RemovePeer(int peer)
        {
            lock (_peers)
            {
                _peers.Remove(peer);
            }
        }

        public int InitiateHandshake(int peer, Span<byte> output)
        {
            Interlocked.Increment(ref _initiations);
            lock (_peers)
            {
                _initiated.Add(peer);
            }

            output[0] = 1;
            ownStatic.CopyTo(output[1..]);
            RandomNumberGenerator.Fill(output.Slice(1 + KeySize, KeySize));
            return 1 + (2 * KeySize);
        }

        public KeyExchangeResult HandleMessage(ReadOnlySpan<byte> input, Span<byte> output)
        {
            lock (_peers)
            {
                if (input.Length != 1 + (2 * KeySize) || input[0] is not (1 or 2))
                {
                    Interlocked.Increment(ref _rejected);
                    throw new InvalidDataException("not a fake handshake message");
                }

                var sender = input.Slice(1, KeySize).ToArray();
                var peer = _peers.FirstOrDefault(p => p.Value.AsSpan().SequenceEqual(sender)).Key;
                if (peer == 0)
                {
                    throw new InvalidDataException("unknown peer");
                }

                var nonce = input.Slice(1 + KeySize, KeySize);
                _keys[peer] = SHA256.HashData(nonce);
                if (input[0] == 2)
                {
                    return new KeyExchangeResult(peer, 0);
                }

                output[0] = 2;
                ownStatic.CopyTo(output[1..]);
                nonce.CopyTo(output[(1 + KeySize)..]);
                return new KeyExchangeResult(peer, 1 + (2 * KeySize));
            }
        }

        public byte[] OutputKey(int peer)
        {
            lock (_peers)
            {
                return _keys[peer];
            }
        }

        public PollResult Poll()
        {
            lock (_peers)
            {
                if (_expired.FirstOrDefault() is var expired and > 0)
                {
                    _expired.Remove(expired);
                    return new PollResult(PollAction.DeleteKey, expired, TimeSpan.Zero);
                }

                foreach (var peer in _peers.Keys)
                {
                    if (!_initiated.Contains(peer) && !_keys.ContainsKey(peer))
                    {
                        return new PollResult(PollAction.SendInitiation, peer, TimeSpan.Zero);
                    }
                }

                return PollResult.Sleep(TimeSpan.FromHours(1));
            }
        }

        public int RetransmitHandshake(int peer, Span<byte> output) => 0;
    }
}
