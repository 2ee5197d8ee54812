using System.Net;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.Rosenpass;
using Proto = Modular.Plugins.Rosenpass.Protocol;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// Two real providers, each with the real protocol (<see cref="CryptoServerExchange"/> over a CryptoServer with a real
/// McEliece-460896 key pair, <see cref="StaticKeys"/>) and its UDP transport on loopback: the exchange runs end to end
/// and both sides end with the same post-quantum PSK, then rotate it.
/// </summary>
public sealed class RealExchangeTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private static readonly WgKey SmallKey = Key(0x01);
    private static readonly WgKey LargeKey = Key(0x02);
    private static readonly WgKey AccountPsk = Key(0x55);

    [Fact]
    public async Task Two_providers_exchange_over_udp_and_share_a_quantum_resistant_psk_replacing_the_seed()
    {
        await using var pair = new Pair(timings: null);
        var seed = SeedKeys.Seed(SmallKey, LargeKey, AccountPsk);
        Assert.Equal(seed, (await pair.AtSmall()).PresharedKey);
        Assert.Equal(seed, (await pair.AtLarge()).PresharedKey);

        await pair.SmallKeys.WaitForAsync(1).WaitAsync(Patience);
        await pair.LargeKeys.WaitForAsync(1).WaitAsync(Patience);
        var atSmall = await pair.AtSmall();
        var atLarge = await pair.AtLarge();

        Assert.True(atSmall.Allowed);
        Assert.NotNull(atSmall.PresharedKey);
        Assert.NotEqual(seed, atSmall.PresharedKey);
        Assert.NotEqual(AccountPsk, atSmall.PresharedKey);
        Assert.Equal(atSmall.PresharedKey, atLarge.PresharedKey);
        Assert.NotNull(atSmall.QuantumResistantSince);
        Assert.NotNull(atLarge.QuantumResistantSince);
        Assert.True(pair.Small.TrafficBytes(LargeKey) > 0);
        Assert.True(pair.Large.TrafficBytes(SmallKey) > 0);
    }

    [Fact]
    public async Task With_shortened_timers_the_psk_is_exchanged_anew_at_least_twice_and_both_sides_follow()
    {
        // Rekey after 12 s / 13 s, keys expire after 18 s.
        await using var pair = new Pair(Proto.CryptoServerTimings.Default.ScaledBy(0.1));
        await pair.AtSmall();
        await pair.AtLarge();

        // The first exchange, then at least two rotations: three exchanged keys both sides changed to. (On a loaded
        // machine a key may also expire first and be ratcheted forward; such steps do not count as exchanges.)
        var shared = await pair.WaitForSharedKeysAsync(3).WaitAsync(Patience * 2);

        Assert.True(shared.Count >= 3, $"{shared.Count} exchanged keys seen by both sides");
        Assert.DoesNotContain(SeedKeys.Seed(SmallKey, LargeKey, AccountPsk), shared);
        Assert.Equal(shared.Count, shared.Distinct().Count());
        Assert.NotNull((await pair.AtSmall()).QuantumResistantSince);
        Assert.NotNull((await pair.AtLarge()).QuantumResistantSince);
    }

    private static WgKey Key(byte first)
    {
        var bytes = new byte[WgKey.Size];
        bytes[0] = first;
        bytes[31] = 7;
        return new WgKey(bytes);
    }

    private static string Fingerprint(byte[] publicKey) => Convert.ToHexStringLower(SHA256.HashData(publicKey));

    /// <summary>The small and large WireGuard keys' providers, on two loopback UDP sockets.</summary>
    private sealed class Pair : IAsyncDisposable
    {
        private readonly IPEndPoint _smallEndpoint;
        private readonly IPEndPoint _largeEndpoint;
        private readonly string _smallFingerprint = Fingerprint(StaticKeys.A.Public);
        private readonly string _largeFingerprint = Fingerprint(StaticKeys.B.Public);
        private readonly object _sharedLock = new();
        private readonly List<(int Count, TaskCompletionSource<List<WgKey>> Done)> _sharedWaiters = [];

        public Pair(Proto.CryptoServerTimings? timings)
        {
            var directory = new KeyDirectory(new() { [_smallFingerprint] = StaticKeys.A.Public, [_largeFingerprint] = StaticKeys.B.Public });
            var smallTransport = new UdpRosenpassTransport(new IPEndPoint(IPAddress.Loopback, 0));
            var largeTransport = new UdpRosenpassTransport(new IPEndPoint(IPAddress.Loopback, 0));
            _smallEndpoint = smallTransport.LocalEndPoint;
            _largeEndpoint = largeTransport.LocalEndPoint;
            Small = new RosenpassProvider(Exchange(StaticKeys.A, timings), smallTransport, directory, TimeProvider.System, NullLogger.Instance);
            Large = new RosenpassProvider(Exchange(StaticKeys.B, timings), largeTransport, directory, TimeProvider.System, NullLogger.Instance);
            Small.KeyChanged += (_, peer) => Record(SmallKeys, peer == LargeKey ? AtSmall().GetAwaiter().GetResult() : null);
            Large.KeyChanged += (_, peer) => Record(LargeKeys, peer == SmallKey ? AtLarge().GetAwaiter().GetResult() : null);
            Small.Start();
            Large.Start();
        }

        public RosenpassProvider Small { get; }

        public RosenpassProvider Large { get; }

        /// <summary>Every key the small side changed to (KeyChanged for the large peer), in order.</summary>
        public KeyHistory SmallKeys { get; } = new();

        public KeyHistory LargeKeys { get; } = new();

        public Task<PskDecision> AtSmall()
            => Small.GetPresharedKeyAsync(Peer(SmallKey, LargeKey, _largeFingerprint, _largeEndpoint), CancellationToken.None).AsTask();

        public Task<PskDecision> AtLarge()
            => Large.GetPresharedKeyAsync(Peer(LargeKey, SmallKey, _smallFingerprint, _smallEndpoint), CancellationToken.None).AsTask();

        /// <summary>Completes when <paramref name="count"/> distinct keys are in both sides' histories; returns them.</summary>
        public Task<List<WgKey>> WaitForSharedKeysAsync(int count)
        {
            var done = new TaskCompletionSource<List<WgKey>>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_sharedLock)
            {
                _sharedWaiters.Add((count, done));
            }

            CheckShared();
            return done.Task;
        }

        public async ValueTask DisposeAsync()
        {
            await Small.DisposeAsync();
            await Large.DisposeAsync();
        }

        private static PskPeer Peer(WgKey local, WgKey remote, string fingerprint, IPEndPoint address)
            => new(remote, "peer", fingerprint, address.ToString()) { LocalPublicKey = local, AccountPresharedKey = AccountPsk, Permissive = false };

        private static CryptoServerExchange Exchange((byte[] Secret, byte[] Public) keys, Proto.CryptoServerTimings? timings)
        {
            var identity = new Lazy<StaticKeyPair>(new StaticKeyPair(keys.Public, keys.Secret));
            return new CryptoServerExchange(identity, TimeProvider.System, timings);
        }

        private void Record(KeyHistory history, PskDecision? decision)
        {
            if (decision?.PresharedKey is { } key)
            {
                history.Add(key);
                CheckShared();
            }
        }

        private void CheckShared()
        {
            var shared = SmallKeys.Exchanged().Intersect(LargeKeys.Exchanged()).ToList();
            lock (_sharedLock)
            {
                foreach (var waiter in _sharedWaiters.Where(w => shared.Count >= w.Count).ToList())
                {
                    _sharedWaiters.Remove(waiter);
                    waiter.Done.TrySetResult(shared);
                }
            }
        }
    }

    /// <summary>The keys one side changed to, with a way to wait for the n-th.</summary>
    private sealed class KeyHistory
    {
        private readonly List<WgKey> _keys = [];
        private readonly List<(int Count, TaskCompletionSource Done)> _waiters = [];

        public void Add(WgKey key)
        {
            lock (_keys)
            {
                if (_keys.Count > 0 && _keys[^1] == key)
                {
                    return;
                }

                _keys.Add(key);
                foreach (var waiter in _waiters.Where(w => _keys.Count >= w.Count).ToList())
                {
                    _waiters.Remove(waiter);
                    waiter.Done.TrySetResult();
                }
            }
        }

        /// <summary>The keys that came from an exchange: every change but an expired key stepped forward.</summary>
        public List<WgKey> Exchanged()
        {
            lock (_keys)
            {
                return [.. _keys.Where((key, i) => i == 0 || key != SeedKeys.Ratchet(_keys[i - 1]))];
            }
        }

        public Task WaitForAsync(int count)
        {
            lock (_keys)
            {
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                if (_keys.Count >= count)
                {
                    done.SetResult();
                }
                else
                {
                    _waiters.Add((count, done));
                }

                return done.Task;
            }
        }
    }

    private sealed class KeyDirectory(Dictionary<string, byte[]> keys) : IRosenpassKeyDirectory
    {
        public ValueTask PublishAsync(ReadOnlyMemory<byte> publicKey, ReadOnlyMemory<byte> fingerprint, string address, CancellationToken cancellationToken)
            => ValueTask.CompletedTask;

        public ValueTask<byte[]?> GetAsync(ReadOnlyMemory<byte> fingerprint, CancellationToken cancellationToken)
            => ValueTask.FromResult(keys.GetValueOrDefault(Convert.ToHexStringLower(fingerprint.Span)));
    }
}
