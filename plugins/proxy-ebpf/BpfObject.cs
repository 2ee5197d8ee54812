using System.Buffers.Binary;
using System.Text;

namespace Modular.Plugins.ProxyEbpf;

/// <summary>
/// Reads one program out of an eBPF ELF object as clang -target bpf writes it: the instructions of a section, its
/// license, and where it references maps (R_BPF_64_64 relocations on ld_imm64 instructions). The host creates the
/// maps itself and <see cref="BindMap"/> writes their file descriptors into those instructions, which is all the
/// linking a program with no BTF, no globals and no subprograms needs. ELF64 little endian only.
/// </summary>
internal sealed class BpfObject
{
    private const int SectionHeaderSize = 64;
    private const int SymbolSize = 24;
    private const int RelSize = 16;
    private const uint ShtSymtab = 2;
    private const uint ShtRel = 9;
    private const uint RBpf6464 = 1;
    private const byte LdImm64 = 0x18;
    private const byte PseudoMapFd = 1;

    private readonly byte[] _instructions;
    private readonly Dictionary<string, List<int>> _mapReferences;

    private BpfObject(byte[] instructions, string license, Dictionary<string, List<int>> mapReferences)
    {
        _instructions = instructions;
        License = license;
        _mapReferences = mapReferences;
    }

    /// <summary>The program's license string (section "license").</summary>
    public string License { get; }

    /// <summary>The instructions, with every map bound so far.</summary>
    public ReadOnlySpan<byte> Instructions => _instructions;

    /// <summary>The names of the maps the program references.</summary>
    public IReadOnlyCollection<string> MapNames => _mapReferences.Keys;

    /// <summary>Reads the program in section <paramref name="section"/> of <paramref name="elf"/>. Throws <see cref="InvalidDataException"/> on anything else.</summary>
    public static BpfObject Read(ReadOnlySpan<byte> elf, string section)
    {
        if (elf.Length < 64 || !elf[..4].SequenceEqual((ReadOnlySpan<byte>)[0x7F, (byte)'E', (byte)'L', (byte)'F']) || elf[4] != 2 || elf[5] != 1)
        {
            throw new InvalidDataException("not a 64-bit little-endian ELF object");
        }

        var sectionsAt = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(elf[0x28..]));
        var count = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3C..]);
        var namesIndex = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3E..]);
        var sections = new Section[count];
        for (var i = 0; i < count; i++)
        {
            var header = Slice(elf, sectionsAt + (i * SectionHeaderSize), SectionHeaderSize);
            sections[i] = new Section(
                BinaryPrimitives.ReadUInt32LittleEndian(header),
                BinaryPrimitives.ReadUInt32LittleEndian(header[4..]),
                checked((int)BinaryPrimitives.ReadUInt64LittleEndian(header[24..])),
                checked((int)BinaryPrimitives.ReadUInt64LittleEndian(header[32..])),
                BinaryPrimitives.ReadUInt32LittleEndian(header[40..]),
                BinaryPrimitives.ReadUInt32LittleEndian(header[44..]));
        }

        var names = Slice(elf, sections[namesIndex].Offset, sections[namesIndex].Size).ToArray();
        int Find(string name) => Array.FindIndex(sections, s => String(names, (int)s.Name) == name);

        var programIndex = Find(section);
        if (programIndex < 0)
        {
            throw new InvalidDataException($"no section \"{section}\"");
        }

        var instructions = Slice(elf, sections[programIndex].Offset, sections[programIndex].Size).ToArray();
        var licenseIndex = Find("license");
        var license = licenseIndex < 0 ? "" : String(Slice(elf, sections[licenseIndex].Offset, sections[licenseIndex].Size), 0);

        var references = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        var relIndex = Array.FindIndex(sections, s => s.Type == ShtRel && s.Info == programIndex);
        if (relIndex >= 0)
        {
            var symtab = sections[sections[relIndex].Link];
            if (symtab.Type != ShtSymtab)
            {
                throw new InvalidDataException("the relocations do not name a symbol table");
            }

            var symbols = Slice(elf, symtab.Offset, symtab.Size);
            var symbolNames = Slice(elf, sections[symtab.Link].Offset, sections[symtab.Link].Size);
            var rels = Slice(elf, sections[relIndex].Offset, sections[relIndex].Size);
            for (var at = 0; at + RelSize <= rels.Length; at += RelSize)
            {
                var offset = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(rels[at..]));
                var info = BinaryPrimitives.ReadUInt64LittleEndian(rels[(at + 8)..]);
                var symbol = Slice(symbols, checked((int)(info >> 32) * SymbolSize), SymbolSize);
                var name = String(symbolNames, (int)BinaryPrimitives.ReadUInt32LittleEndian(symbol));
                if ((uint)info != RBpf6464 || offset % 8 != 0 || offset + 16 > instructions.Length || instructions[offset] != LdImm64)
                {
                    throw new InvalidDataException($"unsupported relocation of {name} at instruction {offset / 8}");
                }

                if (!references.TryGetValue(name, out var list))
                {
                    references[name] = list = [];
                }

                list.Add(offset);
            }
        }

        return new BpfObject(instructions, license, references);
    }

    /// <summary>Points every reference to map <paramref name="name"/> at the map with file descriptor <paramref name="fd"/>.</summary>
    public void BindMap(string name, int fd)
    {
        if (!_mapReferences.TryGetValue(name, out var offsets))
        {
            throw new InvalidDataException($"the program does not reference map {name}");
        }

        foreach (var offset in offsets)
        {
            _instructions[offset + 1] = (byte)((_instructions[offset + 1] & 0x0F) | (PseudoMapFd << 4)); // src_reg
            BinaryPrimitives.WriteInt32LittleEndian(_instructions.AsSpan(offset + 4), fd);
        }
    }

    private static ReadOnlySpan<byte> Slice(ReadOnlySpan<byte> data, int offset, int length)
        => offset < 0 || length < 0 || offset > data.Length - length
            ? throw new InvalidDataException("the ELF object is truncated")
            : data.Slice(offset, length);

    private static string String(ReadOnlySpan<byte> table, int offset)
    {
        if (offset < 0 || offset >= table.Length)
        {
            return "";
        }

        var rest = table[offset..];
        var end = rest.IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? rest : rest[..end]);
    }

    private readonly record struct Section(uint Name, uint Type, int Offset, int Size, uint Link, uint Info);
}
