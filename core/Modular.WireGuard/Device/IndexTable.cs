using System.Collections.Concurrent;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>What a local session index names: a handshake in progress or an established keypair.</summary>
internal sealed record IndexEntry(Peer Peer, HandshakeState? Handshake, Keypair? Keypair);

/// <summary>Random 32-bit receiver indices to the handshake or keypair they belong to. Lookups never lock.</summary>
internal sealed class IndexTable
{
    private readonly ConcurrentDictionary<uint, IndexEntry> _entries = new();

    /// <summary>Picks a fresh random index for <paramref name="peer"/>'s handshake and registers it.</summary>
    public uint NewHandshakeIndex(Peer peer, HandshakeState handshake)
    {
        var entry = new IndexEntry(peer, handshake, null);
        while (true)
        {
            var index = NoiseProtocol.NewIndex();
            if (index != 0 && _entries.TryAdd(index, entry))
            {
                return index;
            }
        }
    }

    /// <summary>Turns a handshake's index into the keypair's.</summary>
    public void SetKeypair(uint index, Peer peer, Keypair keypair) => _entries[index] = new IndexEntry(peer, null, keypair);

    public bool TryGet(uint index, out IndexEntry entry) => _entries.TryGetValue(index, out entry!);

    public void Remove(uint index)
    {
        if (index != 0)
        {
            _entries.TryRemove(index, out _);
        }
    }

    /// <summary>Removes the index only while it still names the given handshake (a keypair may have taken it over).</summary>
    public void RemoveHandshake(uint index, HandshakeState handshake)
    {
        if (_entries.TryGetValue(index, out var entry) && ReferenceEquals(entry.Handshake, handshake))
        {
            _entries.TryRemove(new KeyValuePair<uint, IndexEntry>(index, entry));
        }
    }

    public int Count => _entries.Count;
}
